// [gpu] The tensor-core attention (the mma.sync kernels of kernels/cuda/attention_mma.cu and
// attention_mma_backward.cu, the wmma kernels of kernels/cuda/attention_tc.cu) against the CPU
// kernels and the simple CUDA kernels, forward and backward, on shapes whose T is not a multiple of
// the tile, at GPT-2's T = 1024, with many (batch, head) blocks, causal and full, grouped-query
// heads, head_dim 64 and 128, bf16 and f16; plus the forward/backward mixes across the two schemes,
// bit-identical repeated runs and the registered (auto) path. Every check names its case, the
// output part (out, lse, dq, dk, dv) and the error, and uses CHECK so that one GPU run reports
// every broken part. Outputs start as NaN, so an element a kernel never writes fails loudly.
// Without a device each case is reported as skipped with the driver's reason.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ops/attrs/attention.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#if !defined(KILN_NOCUDA_BUILD)
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/launch.h"
#endif

namespace kiln::testing {
namespace {

#if defined(KILN_NOCUDA_BUILD)

TEST_CASE("tensor-core attention matches the CPU and the simple kernels", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();  // skips: this binary was built without CUDA
}

#else

using kernels::cuda::AttentionImpl;
using kernels::cuda::AttentionLaunch;

struct Case {
  int64_t batch, seq;
  int heads, kv_heads, head_dim;
  bool causal;
  DType dtype;
};

std::string Describe(const Case& c) {
  std::ostringstream s;
  s << "B " << c.batch << " T " << c.seq << " H " << c.heads << " Hkv " << c.kv_heads << " D "
    << c.head_dim << (c.causal ? " causal " : " full ") << c.dtype;
  return s.str();
}

const char* ImplName(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::kSimple:
      return "simple";
    case AttentionImpl::kTensorCore:
      return "tc (mma)";
    case AttentionImpl::kTensorCoreWmma:
      return "tc (wmma)";
    default:
      return "auto";
  }
}

float ScaleOf(const Case& c) { return 1.0f / std::sqrt(static_cast<float>(c.head_dim)); }

ops::AttentionAttrs AttrsOf(const Case& c) {
  return ops::AttentionAttrs{c.heads, c.kv_heads, c.head_dim, c.causal, ScaleOf(c)};
}

int64_t QkvWidth(const Case& c) { return int64_t{c.heads + 2 * c.kv_heads} * c.head_dim; }

// A device tensor filled with NaN: elements a kernel fails to write stay NaN.
Tensor NanOnDevice(const Shape& shape, DType dtype) {
  return ToCuda(Tensor::FromFloats(std::vector<float>(static_cast<size_t>(NumElements(shape)), NAN),
                                   shape, dtype));
}

AttentionLaunch LaunchOf(const Case& c, AttentionImpl impl, const Tensor& qkv) {
  AttentionLaunch a;
  a.impl = impl;
  a.type = kernels::cuda::ToFloatType(c.dtype);
  a.batch = c.batch;
  a.seq = c.seq;
  a.n_head = c.heads;
  a.n_kv_head = c.kv_heads;
  a.head_dim = c.head_dim;
  a.causal = c.causal;
  a.scale = ScaleOf(c);
  a.qkv = qkv.raw_data();
  return a;
}

struct Forward {
  Tensor out;  // (B, T, H D) on the device
  Tensor lse;  // (B, H, T) f32 on the device
};

Forward RunForward(const Case& c, AttentionImpl impl, const Tensor& qkv) {
  Forward f{NanOnDevice({c.batch, c.seq, int64_t{c.heads} * c.head_dim}, c.dtype),
            NanOnDevice({c.batch, c.heads, c.seq}, DType::kF32)};
  AttentionLaunch a = LaunchOf(c, impl, qkv);
  a.out = f.out.raw_data();
  a.lse = f.lse.data<float>();
  kernels::cuda::LaunchAttentionForward(a, kernels::cuda::LaunchStreamFor(qkv));
  return f;
}

// dqkv (B, T, (H + 2 Hkv) D) on the device.
Tensor RunBackward(const Case& c, AttentionImpl impl, const Tensor& qkv, const Forward& f,
                   const Tensor& dout) {
  Tensor dqkv = NanOnDevice(qkv.sizes(), c.dtype);
  const size_t bytes = kernels::cuda::AttentionBackwardWorkspaceBytes(c.batch, c.heads, c.seq);
  Tensor workspace =
      Tensor::Zeros({static_cast<int64_t>(bytes / 4 + 1)}, DType::kF32, Device::CUDA(0));
  AttentionLaunch a = LaunchOf(c, impl, qkv);
  a.out = f.out.raw_data();
  a.lse = f.lse.data<float>();
  a.dout = dout.raw_data();
  a.dqkv = dqkv.raw_data();
  kernels::cuda::LaunchAttentionBackward(a, workspace.raw_data(),
                                         kernels::cuda::LaunchStreamFor(qkv));
  return dqkv;
}

// One column block of packed rows: columns [begin, end) of each row of `width` values.
std::vector<float> Columns(const std::vector<float>& v, int64_t width, int64_t begin, int64_t end) {
  std::vector<float> part;
  for (size_t row = 0; row + width <= v.size(); row += width) {
    part.insert(part.end(), v.begin() + row + begin, v.begin() + row + end);
  }
  return part;
}

double Norm(const std::vector<float>& v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

// CHECKs (not REQUIREs: one run reports every broken part) that `got` is finite and within
// relative L2 `tol` of `want`, naming what was compared. The error is relative to ||want||, or to
// `floor` when that is larger: a part that is zero up to rounding (dq and dk at T = 1, where the
// softmax over one key is constant) is judged against the scale of the whole gradient instead.
void CheckClose(const std::string& what, const std::vector<float>& got,
                const std::vector<float>& want, double tol, double floor = 0) {
  REQUIRE(got.size() == want.size());
  int64_t non_finite = 0, first_bad = -1;
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    err += d * d;
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      ++non_finite;
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
    }
  }
  const double rel = std::sqrt(err) / std::max({Norm(want), floor, 1e-30});
  INFO(what << ": relative L2 error " << rel << " (tolerance " << tol << ", ||want|| " << Norm(want)
            << ", floor " << floor << "), max abs diff " << MaxAbsDiff(got, want) << ", "
            << non_finite << " non-finite of " << got.size() << " (first at flat index "
            << first_bad << ")");
  CHECK(non_finite == 0);
  CHECK(rel <= tol);
}

// Compares dqkv's q, k and v column blocks separately (a broken dv cannot hide behind dq), each
// with 1 % of the whole gradient's norm as its floor.
void CheckGrads(const std::string& what, const Case& c, const std::vector<float>& got,
                const std::vector<float>& want, double tol) {
  const int64_t w = QkvWidth(c), q = int64_t{c.heads} * c.head_dim,
                k = q + int64_t{c.kv_heads} * c.head_dim;
  const double floor = 1e-2 * Norm(want);
  CheckClose(what + " dq", Columns(got, w, 0, q), Columns(want, w, 0, q), tol, floor);
  CheckClose(what + " dk", Columns(got, w, q, k), Columns(want, w, q, k), tol, floor);
  CheckClose(what + " dv", Columns(got, w, k, w), Columns(want, w, k, w), tol, floor);
}

// The CPU reference and every device combination for one case.
void CheckCase(const Case& c) {
  INFO(Describe(c));
  // B H T^2 (attention scores): the T = 1024 and B = 96 cases are for a device.
  if (LeaveOutOnEmulation(Describe(c), double(c.batch) * c.heads * c.seq * c.seq, 2e6)) return;
  const double tol = ToleranceFor(c.dtype);
  const ops::AttentionAttrs attrs = AttrsOf(c);
  const Tensor qkv = RandomTensor({c.batch, c.seq, QkvWidth(c)}, c.dtype, 100 + c.seq, 1.5f);
  const Tensor dout =
      RandomTensor({c.batch, c.seq, int64_t{c.heads} * c.head_dim}, c.dtype, 200 + c.seq);
  auto cpu = graph::RunOp("attention", {qkv}, attrs);
  INFO("cpu attention: " << cpu.status());
  REQUIRE(cpu.ok());
  auto cpu_grad = graph::RunOp("attention_backward", {dout, qkv, (*cpu)[0], (*cpu)[1]}, attrs);
  INFO("cpu attention_backward: " << cpu_grad.status());
  REQUIRE(cpu_grad.ok());
  const std::vector<float> want_out = (*cpu)[0].ToFloats(), want_lse = (*cpu)[1].ToFloats(),
                           want_dqkv = (*cpu_grad)[0].ToFloats();

  const Tensor qkv_d = ToCuda(qkv), dout_d = ToCuda(dout);
  const Forward mma = RunForward(c, AttentionImpl::kTensorCore, qkv_d);
  const Forward wmma = RunForward(c, AttentionImpl::kTensorCoreWmma, qkv_d);
  const Forward simple = RunForward(c, AttentionImpl::kSimple, qkv_d);
  for (const auto& [name, f] : {std::pair<const char*, const Forward*>{"mma", &mma},
                                std::pair<const char*, const Forward*>{"wmma", &wmma}}) {
    const std::vector<float> out = f->out.ToFloats(), lse = f->lse.ToFloats();
    const std::string what = std::string(name) + " forward ";
    CheckClose(what + "out vs cpu", out, want_out, tol);
    CheckClose(what + "lse vs cpu", lse, want_lse, tol);
    CheckClose(what + "out vs simple", out, simple.out.ToFloats(), tol);
    CheckClose(what + "lse vs simple", lse, simple.lse.ToFloats(), tol);
  }

  // Backward: each scheme (mma — at head_dim 64, else wmma —, wmma, simple) on the mma forward's
  // outputs, and the default one on the other forwards' (the out and lse of every forward are
  // interchangeable inputs of every backward).
  const AttentionImpl kTc = AttentionImpl::kTensorCore, kWmma = AttentionImpl::kTensorCoreWmma,
                      kSimple = AttentionImpl::kSimple;
  const std::pair<AttentionImpl, AttentionImpl> mixes[] = {
      {kTc, kTc}, {kTc, kWmma}, {kTc, kSimple}, {kWmma, kTc}, {kSimple, kTc}};
  for (const auto& [fwd, bwd] : mixes) {
    const Forward& f = fwd == kTc ? mma : fwd == kWmma ? wmma : simple;
    const std::string what =
        std::string(ImplName(fwd)) + " forward + " + ImplName(bwd) + " backward vs cpu:";
    CheckGrads(what, c, RunBackward(c, bwd, qkv_d, f, dout_d).ToFloats(), want_dqkv, tol);
  }
}

// bf16 cases: tails of every kind (T = 1, 17, 77, 200: one partial tile, several tiles with a
// partial last), T = 1024, many (batch, head) blocks, causal and full, GQA, both head dims. The
// last is T = 1024 small enough for the kernel emulation.
const Case kBf16Cases[] = {
    {2, 1, 4, 4, 64, true, DType::kBF16},      {2, 17, 4, 2, 128, true, DType::kBF16},
    {2, 17, 4, 4, 64, false, DType::kBF16},    {2, 77, 8, 2, 64, true, DType::kBF16},
    {1, 77, 8, 2, 128, false, DType::kBF16},   {2, 200, 8, 2, 128, true, DType::kBF16},
    {3, 200, 4, 1, 64, false, DType::kBF16},   {2, 64, 2, 2, 64, true, DType::kBF16},
    {2, 1024, 12, 12, 64, true, DType::kBF16}, {1, 1024, 8, 2, 128, true, DType::kBF16},
    {96, 65, 12, 12, 64, true, DType::kBF16},  {1, 1024, 1, 1, 64, true, DType::kBF16},
};

const Case kF16Cases[] = {
    {2, 77, 8, 2, 64, true, DType::kF16},
    {2, 130, 4, 4, 128, false, DType::kF16},
    {1, 1024, 12, 12, 64, true, DType::kF16},
};

TEST_CASE("tensor-core attention matches the CPU and the simple kernels (bf16)", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (const Case& c : kBf16Cases) CheckCase(c);
}

TEST_CASE("tensor-core attention matches the CPU and the simple kernels (f16)", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (const Case& c : kF16Cases) CheckCase(c);
}

TEST_CASE("tensor-core attention repeats bit for bit", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (const Case& c :
       {Case{2, 200, 8, 2, 64, true, DType::kBF16}, Case{2, 130, 4, 4, 128, false, DType::kF16}}) {
    INFO(Describe(c));
    const Tensor qkv = ToCuda(RandomTensor({c.batch, c.seq, QkvWidth(c)}, c.dtype, 7));
    const Tensor dout =
        ToCuda(RandomTensor({c.batch, c.seq, int64_t{c.heads} * c.head_dim}, c.dtype, 8));
    const Forward a = RunForward(c, AttentionImpl::kTensorCore, qkv);
    const Forward b = RunForward(c, AttentionImpl::kTensorCore, qkv);
    CHECK(a.out.ToFloats() == b.out.ToFloats());
    CHECK(a.lse.ToFloats() == b.lse.ToFloats());
    const Forward wa = RunForward(c, AttentionImpl::kTensorCoreWmma, qkv);
    const Forward wb = RunForward(c, AttentionImpl::kTensorCoreWmma, qkv);
    CHECK(wa.out.ToFloats() == wb.out.ToFloats());
    for (AttentionImpl bwd : {AttentionImpl::kTensorCore, AttentionImpl::kTensorCoreWmma}) {
      INFO(ImplName(bwd) << " backward");
      const std::vector<float> first = RunBackward(c, bwd, qkv, a, dout).ToFloats();
      for (int run = 0; run < 3; ++run) {
        INFO("backward run " << run + 2);
        const std::vector<float> again = RunBackward(c, bwd, qkv, a, dout).ToFloats();
        CHECK(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("the registered attention takes the tensor cores where they apply", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  const Case c{2, 77, 8, 2, 64, true, DType::kBF16};
  INFO(Describe(c));
  const Tensor qkv = ToCuda(RandomTensor({c.batch, c.seq, QkvWidth(c)}, c.dtype, 9));
  AttentionLaunch a = LaunchOf(c, AttentionImpl::kAuto, qkv);
  Tensor out = NanOnDevice({c.batch, c.seq, int64_t{c.heads} * c.head_dim}, c.dtype);
  a.out = out.raw_data();
  kernels::cuda::SetCurrentDevice(Device::CUDA(0));
  CHECK(kernels::cuda::AttentionTensorCoreAvailable(a));
  a.type = kernels::cuda::FloatType::kF32;
  CHECK_FALSE(kernels::cuda::AttentionTensorCoreAvailable(a));
  // And through the executor (the registered kernel, whichever path it takes) against the CPU.
  const Tensor qkv_cpu = RandomTensor({c.batch, c.seq, QkvWidth(c)}, c.dtype, 10);
  CheckOpParity("attention", {qkv_cpu}, AttrsOf(c), ToleranceFor(c.dtype));
  auto fwd = graph::RunOp("attention", {qkv_cpu}, AttrsOf(c));
  REQUIRE(fwd.ok());
  const Tensor dout = RandomTensor((*fwd)[0].sizes(), c.dtype, 11);
  CheckOpParity("attention_backward", {dout, qkv_cpu, (*fwd)[0], (*fwd)[1]}, AttrsOf(c),
                ToleranceFor(c.dtype));
}

#endif  // KILN_NOCUDA_BUILD

}  // namespace
}  // namespace kiln::testing
