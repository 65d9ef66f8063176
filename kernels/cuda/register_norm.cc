// CUDA kernels of layer_norm / rms_norm and their backwards (engine/ops/attrs/norm.h): x and dy in
// f32, bf16 or f16; gamma, beta and the statistics f32; dgamma / dbeta deterministic (norm.cu).
#include "kernels/common/bind_args.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

template <bool kRms>
void RunNorm(const KernelContext& ctx) {
  NormLaunch a;
  BindNorm<kRms>(ctx, DeviceType::kCUDA, a);
  a.type = ToFloatType(ctx.input(0).dtype());
  LaunchNorm(a, LaunchStreamFor(ctx.input(0)));
}

template <bool kRms>
class NormBackwardKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const Tensor& x = ctx.input(1);
    return NormBackwardWorkspaceBytes(Rows(x), LastDim(x));
  }

  void Run(const KernelContext& ctx) override {
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "norm backward workspace";
    NormLaunch a;
    BindNormBackward<kRms>(ctx, DeviceType::kCUDA, a);
    a.type = ToFloatType(ctx.input(0).dtype());
    LaunchNormBackward(a, ctx.workspace, LaunchStreamFor(ctx.input(1)));
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("layer_norm", kCUDA, RunNorm<false>);
KILN_REGISTER_FLOAT_KERNEL_FNS("rms_norm", kCUDA, RunNorm<true>);
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward", kCUDA, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward", kCUDA, NormBackwardKernel<true>);
// The _add forms: the residual gradient added to dx (Note [Residual gradient in the norm
// backward], engine/ops/norm.cc).
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward_add", kCUDA, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward_add", kCUDA, NormBackwardKernel<true>);

}  // namespace kiln::kernels::cuda
