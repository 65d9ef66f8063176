// CPU kernels of layer_norm / rms_norm and their backwards (engine/ops/attrs/norm.h): x and dy in
// f32, bf16 or f16; gamma, beta and the statistics f32.
#include "kernels/common/bind_args.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// layer_norm(x, gamma, beta) -> (y, mean, rstd); rms_norm(x, gamma) -> (y, rstd).
template <bool kRms>
void RunNorm(const KernelContext& ctx) {
  NormArgs args;
  BindNorm<kRms>(ctx, DeviceType::kCPU, args);
  args.dtype = ctx.input(0).dtype();
  if (args.rows == 0 || args.cols == 0) return;
  Isa().norm(args);
}

// layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta);
// rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma); the _add forms add their last input, the
// residual gradient, to dx (Note [Residual gradient in the norm backward], engine/ops/norm.cc).
template <bool kRms>
class NormBackwardKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const Tensor& x = ctx.input(1);
    return static_cast<size_t>(NormBackwardWorkspaceFloats(Rows(x), LastDim(x))) * sizeof(float);
  }

  void Run(const KernelContext& ctx) override {
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "norm backward workspace";
    NormBackwardArgs args;
    BindNormBackward<kRms>(ctx, DeviceType::kCPU, args);
    args.dtype = ctx.input(0).dtype();
    args.partials = static_cast<float*>(ctx.workspace);
    if (args.cols == 0) return;
    Isa().norm_backward(args);
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("layer_norm", kCPU, RunNorm<false>);
KILN_REGISTER_FLOAT_KERNEL_FNS("rms_norm", kCPU, RunNorm<true>);
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward", kCPU, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward", kCPU, NormBackwardKernel<true>);
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward_add", kCPU, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward_add", kCPU, NormBackwardKernel<true>);

}  // namespace kiln::kernels::cpu
