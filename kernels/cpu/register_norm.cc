// CPU kernels of layer_norm / rms_norm and their backwards (engine/ops/attrs/norm.h): x and dy in
// f32, bf16 or f16; gamma, beta and the statistics f32.
#include "engine/ops/attrs/norm.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// layer_norm(x, gamma, beta) -> (y, mean, rstd); rms_norm(x, gamma) -> (y, rstd).
template <bool kRms>
void RunNorm(const KernelContext& ctx) {
  const Tensor& x = ctx.input(0);  // (..., C)
  const Tensor& gamma = ctx.input(1);
  const Tensor& y = ctx.output(0);
  const Tensor& rstd = ctx.output(kRms ? 1 : 2);
  CheckNorm(ctx, DeviceType::kCPU, kRms);
  NormArgs args;
  args.rms = kRms;
  args.dtype = x.dtype();
  args.x = x.raw_data();
  args.gamma = gamma.data<float>();
  args.y = y.raw_data();
  args.rstd = rstd.data<float>();
  args.rows = Rows(x);
  args.cols = LastDim(x);
  args.eps = ctx.attrs_as<ops::NormAttrs>().eps;
  if constexpr (!kRms) {
    args.beta = ctx.input(2).data<float>();
    args.mean = ctx.output(1).data<float>();
  }
  if (args.rows == 0 || args.cols == 0) return;
  Isa().norm(args);
}

// layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta);
// rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma).
template <bool kRms>
class NormBackwardKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const Tensor& x = ctx.input(1);
    return static_cast<size_t>(NormBackwardWorkspaceFloats(Rows(x), LastDim(x))) * sizeof(float);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& dy = ctx.input(0);  // (..., C)
    const Tensor& x = ctx.input(1);   // (..., C)
    const Tensor& gamma = ctx.input(2);
    const Tensor& rstd = ctx.input(kRms ? 3 : 4);
    const Tensor& dx = ctx.output(0);
    const Tensor& dgamma = ctx.output(1);
    CheckNormBackward(ctx, DeviceType::kCPU, kRms);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "norm backward workspace";
    NormBackwardArgs args;
    args.rms = kRms;
    args.dtype = dy.dtype();
    args.dy = dy.raw_data();
    args.x = x.raw_data();
    args.gamma = gamma.data<float>();
    args.rstd = rstd.data<float>();
    args.dx = dx.raw_data();
    args.dgamma = dgamma.data<float>();
    args.rows = Rows(x);
    args.cols = LastDim(x);
    args.partials = static_cast<float*>(ctx.workspace);
    if constexpr (!kRms) {
      args.mean = ctx.input(3).data<float>();
      args.dbeta = ctx.output(2).data<float>();
    }
    if (args.cols == 0) return;
    Isa().norm_backward(args);
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("layer_norm", kCPU, RunNorm<false>);
KILN_REGISTER_FLOAT_KERNEL_FNS("rms_norm", kCPU, RunNorm<true>);
KILN_REGISTER_FLOAT_KERNELS("layer_norm_backward", kCPU, NormBackwardKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("rms_norm_backward", kCPU, NormBackwardKernel<true>);

}  // namespace kiln::kernels::cpu
