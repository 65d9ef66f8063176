// Every op's bf16 (and f16, where a kernel is registered) path against its f32 path on the same
// inputs: relative L2 <= 1e-2 for bf16 and <= 2e-3 for f16 (bf16 keeps 8 mantissa bits, f16 11).
#include <cmath>

#include "engine/core/kernel.h"
#include "engine/graph/executor.h"
#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/matmul.h"
#include "engine/ops/attrs/norm.h"
#include "tests/engine/ops/gradcheck.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

struct Case {
  std::string op;
  std::any attrs;
  std::vector<Tensor> inputs;  // f32 reference inputs
  std::vector<bool> keep_f32;  // inputs that stay f32 in the low-precision run (norm params, stats)
};

void CompareLowPrecision(const Case& c, DType low) {
  if (KernelRegistry::Global().Find(c.op, DeviceType::kCPU, low) == nullptr) {
    REQUIRE(low == DType::kF16);  // bf16 is required for every float op
    return;
  }
  std::vector<Tensor> low_inputs;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const bool keep = i < c.keep_f32.size() && c.keep_f32[i];
    const Tensor& t = c.inputs[i];
    low_inputs.push_back(IsFloating(t.dtype()) && !keep ? t.To(low) : t);
  }
  // The reference runs on the rounded inputs, so only the computation's precision is compared.
  std::vector<Tensor> ref_inputs;
  for (const Tensor& t : low_inputs) ref_inputs.push_back(IsFloating(t.dtype()) ? t.To(DType::kF32) : t);
  auto ref = graph::RunOp(c.op, ref_inputs, c.attrs);
  auto got = graph::RunOp(c.op, low_inputs, c.attrs);
  INFO(c.op << " in " << DTypeName(low));
  REQUIRE(ref.ok());
  INFO(got.status());
  REQUIRE(got.ok());
  REQUIRE(ref->size() == got->size());
  const double tol = low == DType::kBF16 ? 1e-2 : 2e-3;
  for (size_t k = 0; k < ref->size(); ++k) {
    INFO("output " << k);
    KILN_REQUIRE_CLOSE((*got)[k].ToFloats(), (*ref)[k].ToFloats(), tol);
  }
}

std::vector<Case> Cases() {
  const Tensor x = RandomTensor({3, 5, 72}, 1);
  const Tensor dy = RandomTensor({3, 5, 72}, 2);
  const Tensor gamma = RandomTensor({72}, 3), beta = RandomTensor({72}, 4);
  const Tensor qkv = RandomTensor({2, 37, (6 + 4) * 24}, 5);
  const Tensor out = RandomTensor({2, 37, 6 * 24}, 6);
  const Tensor lse = RandomTensor({2, 6, 37}, 7, 0.1f);
  const ops::AttentionAttrs attn{6, 2, 24, true, 0.0f};
  return {
      {"matmul", ops::MatmulAttrs{false, true}, {x, RandomTensor({40, 72}, 10)}, {}},
      {"add", {}, {x, RandomTensor({72}, 11)}, {}},
      {"mul", {}, {x, dy}, {}},
      {"scale", ops::ScaleAttrs{0.3f}, {x}, {}},
      {"gelu", {}, {x}, {}},
      {"gelu_backward", {}, {dy, x}, {}},
      {"silu", {}, {x}, {}},
      {"silu_backward", {}, {dy, x}, {}},
      {"swiglu", {}, {x}, {}},
      {"swiglu_backward", {}, {RandomTensor({3, 5, 36}, 12), x}, {}},
      {"sum_to", ops::SumToAttrs{{72}}, {x}, {}},
      {"sum", {}, {x}, {}},
      {"layer_norm", ops::NormAttrs{1e-5f}, {x, gamma, beta}, {false, true, true}},
      {"rms_norm", ops::NormAttrs{1e-5f}, {x, gamma}, {false, true}},
      {"rope", ops::RopeAttrs{6, 2, 24, 10000.0f, false}, {qkv}, {}},
      {"attention", attn, {qkv}, {}},
      {"attention_backward", attn, {out, qkv, out, lse}, {false, false, false, true}},
      {"cross_entropy", ops::CrossEntropyAttrs{}, {RandomTensor({15, 1000}, 13), RandomIds({15}, 1000, 14)}, {}},
      {"embedding", {}, {RandomTensor({1000, 72}, 15), RandomIds({3, 5}, 1000, 16)}, {}},
      {"embedding_backward", ops::EmbeddingAttrs{50}, {dy, RandomIds({3, 5}, 50, 17)}, {}},
  };
}

TEST_CASE("bf16 kernels match f32 within bf16 tolerance", "[precision]") {
  for (const Case& c : Cases()) CompareLowPrecision(c, DType::kBF16);
}

TEST_CASE("f16 kernels, where registered, match f32 within f16 tolerance", "[precision]") {
  for (const Case& c : Cases()) CompareLowPrecision(c, DType::kF16);
}

TEST_CASE("casts between f32, bf16 and f16 round to nearest even", "[precision]") {
  const Tensor x = RandomTensor({1000}, 20, 100.0f);
  for (DType from : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
      if (from == to) continue;
      const Tensor src = x.To(from);
      auto got = graph::RunOp("cast", {src}, ops::CastAttrs{to});
      INFO(DTypeName(from) << " -> " << DTypeName(to) << ": " << got.status());
      REQUIRE(got.ok());
      REQUIRE((*got)[0].dtype() == to);
      REQUIRE((*got)[0].ToFloats() == src.To(to).ToFloats());  // Tensor::To is the scalar reference
    }
  }
}

}  // namespace
}  // namespace kiln::testing
