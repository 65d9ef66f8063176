// Kernels' Run must not allocate (Note [Kernels are per node] in engine/core/kernel.h): every CPU
// kernel is prepared, run once to warm up (OpenMP starts its team), then run again while a
// replaced global operator new counts heap allocations.
#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/matmul.h"
#include "engine/ops/attrs/norm.h"
#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(size_t bytes) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes > 0 ? bytes : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace kiln::testing {
namespace {

// Heap allocations made by the second Run of a prepared kernel.
int64_t AllocationsInRun(const std::string& op, DType dtype, std::vector<Tensor> inputs,
                         std::vector<Tensor> outputs, std::any attrs = {}) {
  KernelRunner runner(op, dtype, std::move(inputs), std::move(outputs), std::move(attrs));
  runner.Run();
  const int64_t before = g_allocations.load();
  runner.Run();
  return g_allocations.load() - before;
}

TEST_CASE("kernel Run does not allocate", "[kernels][alloc]") {
  const DType f32 = DType::kF32, bf16 = DType::kBF16;
  const Shape s{301, 129};
  const auto x = [&](DType d = DType::kF32) { return RandomTensor(s, d, 91); };
  const auto z = [&](DType d = DType::kF32) { return Tensor::Zeros(s, d); };
  const Tensor gamma = RandomTensor({129}, f32, 92), rows = RandomTensor({301}, f32, 93, 0.5f, 1);
  const ops::NormAttrs eps{1e-5f};
  const ops::AttentionAttrs attn{6, 2, 24, true, 0.0f};
  const Shape qkv{2, 37, 240}, out{2, 37, 144}, lse{2, 6, 37};
  const Tensor targets = Tensor::FromVector<int32_t>(std::vector<int32_t>(301, 3), {301});
  struct Case {
    const char* op;
    int64_t allocations;
  };
  const Case cases[] = {
      {"gelu", AllocationsInRun("gelu", f32, {x()}, {z()})},
      {"gelu_backward", AllocationsInRun("gelu_backward", bf16, {x(bf16), x(bf16)}, {z(bf16)})},
      {"silu", AllocationsInRun("silu", f32, {x()}, {z()})},
      {"swiglu", AllocationsInRun("swiglu", f32, {RandomTensor({301, 258}, f32, 94)}, {z()})},
      {"add", AllocationsInRun("add", f32, {x(), gamma}, {z()})},
      {"mul", AllocationsInRun("mul", f32, {x(), x()}, {z()})},
      {"scale", AllocationsInRun("scale", f32, {x()}, {z()}, ops::ScaleAttrs{2.0f})},
      {"cast", AllocationsInRun("cast", f32, {x()}, {z(bf16)}, ops::CastAttrs{bf16})},
      {"accumulate_grad", AllocationsInRun("accumulate_grad", bf16, {x(bf16)}, {z()})},
      {"swiglu_backward",
       AllocationsInRun("swiglu_backward", f32, {x(), RandomTensor({301, 258}, f32, 94)},
                        {Tensor::Zeros({301, 258}, f32)})},
      {"broadcast_scalar",
       AllocationsInRun("broadcast_scalar", f32, {Tensor::FromFloats({1.0f}, {1})}, {z()},
                        ops::BroadcastScalarAttrs{s, f32, 1.0f})},
      {"sum", AllocationsInRun("sum", f32, {x()}, {Tensor::Zeros({1}, f32)})},
      {"sum_to",
       AllocationsInRun("sum_to", f32, {x()}, {Tensor::Zeros({129}, f32)}, ops::SumToAttrs{{129}})},
      {"layer_norm",
       AllocationsInRun("layer_norm", f32, {x(), gamma, gamma},
                        {z(), Tensor::Zeros({301}, f32), Tensor::Zeros({301}, f32)}, eps)},
      {"layer_norm_backward",
       AllocationsInRun("layer_norm_backward", f32, {x(), x(), gamma, rows, rows},
                        {z(), Tensor::Zeros({129}, f32), Tensor::Zeros({129}, f32)}, eps)},
      {"rms_norm", AllocationsInRun("rms_norm", bf16, {x(bf16), gamma},
                                    {z(bf16), Tensor::Zeros({301}, f32)}, eps)},
      {"rms_norm_backward", AllocationsInRun("rms_norm_backward", f32, {x(), x(), gamma, rows},
                                             {z(), Tensor::Zeros({129}, f32)}, eps)},
      {"rope", AllocationsInRun("rope", f32, {RandomTensor(qkv, f32, 95)},
                                {Tensor::Zeros(qkv, f32)}, ops::RopeAttrs{6, 2, 24, 1e4f, false})},
      {"attention", AllocationsInRun("attention", f32, {RandomTensor(qkv, f32, 96)},
                                     {Tensor::Zeros(out, f32), Tensor::Zeros(lse, f32)}, attn)},
      {"attention_backward",
       AllocationsInRun("attention_backward", f32,
                        {RandomTensor(out, f32, 97), RandomTensor(qkv, f32, 96),
                         RandomTensor(out, f32, 98), RandomTensor(lse, f32, 99)},
                        {Tensor::Zeros(qkv, f32)}, attn)},
      {"cross_entropy", AllocationsInRun("cross_entropy", f32, {x(), targets},
                                         {Tensor::Zeros({1}, f32), z()}, ops::CrossEntropyAttrs{})},
      {"embedding", AllocationsInRun("embedding", f32, {RandomTensor({10, 129}, f32, 105), targets},
                                     {z()}, ops::EmbeddingAttrs{})},
      {"embedding_backward",
       AllocationsInRun("embedding_backward", f32, {x(), targets}, {Tensor::Zeros({10, 129}, f32)},
                        ops::EmbeddingAttrs{10})},
      {"dropout", AllocationsInRun("dropout", f32, {x(), Tensor::FromVector<int64_t>({1, 2}, {2})},
                                   {z()}, ops::DropoutAttrs{0.1f, 3})},
  };
  for (const Case& c : cases) {
    INFO(c.op);
    CHECK(c.allocations == 0);
  }
}

// Note [oneDNN execute allocates]: dnnl_primitive_execute (oneDNN 2.6) copies its arguments into a
// small hash map per call, a few heap allocations of a few dozen bytes whatever the shapes. The
// kernel itself allocates nothing (prebuilt argument array, user scratchpad in the workspace); this
// pins the count so that anything more shows up.
TEST_CASE("matmul Run allocates only oneDNN's per-call argument map", "[kernels][alloc]") {
  const DType f32 = DType::kF32;
  const int64_t small = AllocationsInRun(
      "matmul", f32, {RandomTensor({37, 72}, f32, 101), RandomTensor({72, 45}, f32, 102)},
      {Tensor::Zeros({37, 45}, f32)}, ops::MatmulAttrs{});
  const int64_t large = AllocationsInRun(
      "matmul", DType::kBF16,
      {RandomTensor({512, 256}, DType::kBF16, 103), RandomTensor({768, 256}, DType::kBF16, 104)},
      {Tensor::Zeros({512, 768}, DType::kBF16)}, ops::MatmulAttrs{false, true});
  CHECK(small <= 8);
  CHECK(large == small);
}

}  // namespace
}  // namespace kiln::testing
