// CUDA kernels of layer_norm / rms_norm and their backwards (engine/ops/attrs/norm.h): x and dy in
// f32, bf16 or f16; gamma, beta and the statistics f32; dgamma / dbeta deterministic (norm.cu).
#include "engine/ops/attrs/norm.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

template <bool kRms>
void RunNorm(const KernelContext& ctx) {
  const Tensor& x = ctx.input(0);  // (..., C)
  const Tensor& gamma = ctx.input(1);
  const Tensor& y = ctx.output(0);
  const Tensor& rstd = ctx.output(kRms ? 1 : 2);
  CheckNorm(ctx, DeviceType::kCUDA, kRms);
  NormLaunch a;
  a.rms = kRms;
  a.type = ToFloatType(x.dtype());
  a.x = x.raw_data();
  a.gamma = gamma.data<float>();
  a.y = y.raw_data();
  a.rstd = rstd.data<float>();
  a.rows = Rows(x);
  a.cols = LastDim(x);
  a.eps = ctx.attrs_as<ops::NormAttrs>().eps;
  if constexpr (!kRms) {
    a.beta = ctx.input(2).data<float>();
    a.mean = ctx.output(1).data<float>();
  }
  LaunchNorm(a, LaunchStreamFor(x));
}

template <bool kRms>
class NormBackwardKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const Tensor& x = ctx.input(1);
    return NormBackwardWorkspaceBytes(Rows(x), LastDim(x));
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& dy = ctx.input(0);  // (..., C)
    const Tensor& x = ctx.input(1);   // (..., C)
    const Tensor& gamma = ctx.input(2);
    const Tensor& rstd = ctx.input(kRms ? 3 : 4);
    const Tensor& dx = ctx.output(0);
    const Tensor& dgamma = ctx.output(1);
    CheckNormBackward(ctx, DeviceType::kCUDA, kRms);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "norm backward workspace";
    NormLaunch a;
    a.rms = kRms;
    a.type = ToFloatType(dy.dtype());
    a.dy = dy.raw_data();
    a.x = x.raw_data();
    a.gamma = gamma.data<float>();
    a.rstd = rstd.data<float>();
    a.dx = dx.raw_data();
    a.dgamma = dgamma.data<float>();
    a.rows = Rows(x);
    a.cols = LastDim(x);
    if constexpr (!kRms) {
      a.mean = ctx.input(3).data<float>();
      a.dbeta = ctx.output(2).data<float>();
    }
    LaunchNormBackward(a, ctx.workspace, LaunchStreamFor(x));
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("layer_norm", kCUDA, RunNorm<false>);
KILN_REGISTER_FLOAT_KERNEL_FNS("rms_norm", kCUDA, RunNorm<true>);
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward", kCUDA, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward", kCUDA, NormBackwardKernel<true>);

}  // namespace kiln::kernels::cuda
