// CPU kernels of the reductions (engine/ops/attrs/elementwise.h): sum and mean of all elements
// (f32 [1] out) and sum_to (sum over leading axes). Deterministic for any thread count: see
// Note [Fixed blockings] in isa_api.h.
#include "engine/ops/attrs/elementwise.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// sum(x) or mean(x) -> f32 [1].
template <bool kMean>
class SumKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    return static_cast<size_t>(SumBlockCount(ctx.input(0).numel())) * sizeof(double);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& out = ctx.output(0);  // [1] f32
    CheckTensor(out, DType::kF32, "sum output");
    KILN_CHECK_EQ(out.numel(), 1);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "sum workspace";
    const int64_t n = x.numel();
    const double scale = kMean ? (n > 0 ? 1.0 / static_cast<double>(n) : 0.0) : 1.0;
    Isa().sum({x.dtype(), x.raw_data(), n, scale, out.data<float>(),
               static_cast<double*>(ctx.workspace)});
  }
};

// sum_to(dy) -> out of attrs.shape, a suffix of dy's shape; out has dy's dtype.
class SumToKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const int64_t cols = ctx.output(0).numel();
    const int64_t rows = cols == 0 ? 0 : ctx.input(0).numel() / cols;
    return static_cast<size_t>(SumToWorkspaceFloats(rows, cols)) * sizeof(float);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& dy = ctx.input(0);
    const Tensor& out = ctx.output(0);
    CheckSumTo(ctx, DeviceType::kCPU);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "sum_to workspace";
    const int64_t cols = out.numel();
    if (cols == 0) return;
    Isa().sum_to({dy.dtype(), dy.raw_data(), dy.numel() / cols, cols, out.raw_data(),
                  static_cast<float*>(ctx.workspace)});
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNELS("sum", kCPU, SumKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("mean", kCPU, SumKernel<true>);
KILN_REGISTER_FLOAT_KERNELS("sum_to", kCPU, SumToKernel);

}  // namespace kiln::kernels::cpu
