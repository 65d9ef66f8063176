// CPU kernels of layer_norm / rms_norm and their backwards (engine/ops/attrs/norm.h): x and dy in
// f32, bf16 or f16; gamma, beta and the statistics f32.
#include "engine/ops/attrs/norm.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// Checks the f32 (C) parameters and (rows) statistics against x.
void CheckNormTensors(const Tensor& x, std::initializer_list<const Tensor*> params,
                      std::initializer_list<const Tensor*> stats) {
  for (const Tensor* p : params) {
    CheckTensor(*p, DType::kF32, "norm parameter");
    KILN_CHECK_EQ(p->numel(), LastDim(x));
  }
  for (const Tensor* s : stats) {
    CheckTensor(*s, DType::kF32, "norm statistic");
    KILN_CHECK_EQ(s->numel(), Rows(x));
  }
}

// layer_norm(x, gamma, beta) -> (y, mean, rstd); rms_norm(x, gamma) -> (y, rstd).
template <bool kRms>
void RunNorm(const KernelContext& ctx) {
  const Tensor& x = ctx.input(0);  // (..., C)
  const Tensor& gamma = ctx.input(1);
  const Tensor& y = ctx.output(0);
  const Tensor& rstd = ctx.output(kRms ? 1 : 2);
  CheckTensor(y, x.dtype(), "norm output");
  CheckSameShape(x, y, "norm");
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
  if constexpr (kRms) {
    CheckNormTensors(x, {&gamma}, {&rstd});
  } else {
    CheckNormTensors(x, {&gamma, &ctx.input(2)}, {&ctx.output(1), &rstd});
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
    CheckTensor(x, dy.dtype(), "norm backward x");
    CheckTensor(dx, dy.dtype(), "norm backward dx");
    CheckSameShape(dy, x, "norm backward");
    CheckSameShape(dy, dx, "norm backward");
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
    if constexpr (kRms) {
      CheckNormTensors(x, {&gamma, &dgamma}, {&rstd});
    } else {
      CheckNormTensors(x, {&gamma, &dgamma, &ctx.output(2)}, {&ctx.input(3), &rstd});
      args.mean = ctx.input(3).data<float>();
      args.dbeta = ctx.output(2).data<float>();
    }
    if (args.cols == 0) return;
    Isa().norm_backward(args);
  }
};

}  // namespace

KILN_REGISTER_KERNEL_FN("layer_norm", kCPU, kF32, RunNorm<false>);
KILN_REGISTER_KERNEL_FN("layer_norm", kCPU, kBF16, RunNorm<false>);
KILN_REGISTER_KERNEL_FN("layer_norm", kCPU, kF16, RunNorm<false>);
KILN_REGISTER_KERNEL_FN("rms_norm", kCPU, kF32, RunNorm<true>);
KILN_REGISTER_KERNEL_FN("rms_norm", kCPU, kBF16, RunNorm<true>);
KILN_REGISTER_KERNEL_FN("rms_norm", kCPU, kF16, RunNorm<true>);
KILN_REGISTER_KERNEL("layer_norm_backward", kCPU, kF32, NormBackwardKernel<false>);
KILN_REGISTER_KERNEL("layer_norm_backward", kCPU, kBF16, NormBackwardKernel<false>);
KILN_REGISTER_KERNEL("layer_norm_backward", kCPU, kF16, NormBackwardKernel<false>);
KILN_REGISTER_KERNEL("rms_norm_backward", kCPU, kF32, NormBackwardKernel<true>);
KILN_REGISTER_KERNEL("rms_norm_backward", kCPU, kBF16, NormBackwardKernel<true>);
KILN_REGISTER_KERNEL("rms_norm_backward", kCPU, kF16, NormBackwardKernel<true>);

}  // namespace kiln::kernels::cpu
