// CUDA kernels of the element-wise ops (engine/ops/attrs/elementwise.h; dropout from loss.h):
// contract checks on the bound tensors, then the launches of eltwise.cu. f32, bf16 and f16, as the
// CPU registers them; scalars (scale_by's s, broadcast_scalar's s, dropout's rng) stay on the
// device and are read by the kernels.
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

template <UnaryOp kOp>
void RunActivation(const KernelContext& ctx) {
  CheckActivation(ctx, DeviceType::kCUDA);
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  LaunchUnary(kOp, ToFloatType(x.dtype()), ToFloatType(y.dtype()), x.raw_data(), y.raw_data(),
              x.numel(), 1.0f, nullptr, LaunchStreamFor(x));
}

// y = alpha * (s ? s[0] : 1) * x, converting dtype (scale, scale_by, cast).
template <ScaleOp kOp>
void RunScale(const KernelContext& ctx) {
  CheckScale(ctx, DeviceType::kCUDA, kOp);
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  const float alpha = kOp == ScaleOp::kScale ? ctx.attrs_as<ops::ScaleAttrs>().alpha : 1.0f;
  const float* s = kOp == ScaleOp::kScaleBy ? ctx.input(1).data<float>() : nullptr;  // on device
  LaunchUnary(UnaryOp::kScale, ToFloatType(x.dtype()), ToFloatType(y.dtype()), x.raw_data(),
              y.raw_data(), x.numel(), alpha, s, LaunchStreamFor(x));
}

template <BinaryOp kOp>
void RunBinary(const KernelContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const Tensor& out = ctx.output(0);
  CheckBinary(ctx, DeviceType::kCUDA, kOp == BinaryOp::kAdd);
  if (a.numel() == 0) return;
  LaunchBinary(kOp, ToFloatType(a.dtype()), ToFloatType(b.dtype()), a.raw_data(), b.raw_data(),
               out.raw_data(), a.numel(), b.numel(), LaunchStreamFor(a));
}

void RunAccumulateGrad(const KernelContext& ctx) {
  const Tensor& g = ctx.input(0);
  const Tensor& acc = ctx.output(0);
  CheckTensor(g, g.dtype(), "accumulate_grad g");
  CheckTensor(acc, acc.dtype(), "accumulate_grad G");
  KILN_CHECK_EQ(acc.numel(), g.numel());
  if (g.numel() == 0) return;
  LaunchBinary(BinaryOp::kAdd, ToFloatType(acc.dtype()), ToFloatType(g.dtype()), acc.raw_data(),
               g.raw_data(), acc.raw_data(), g.numel(), g.numel(), LaunchStreamFor(g));
}

void RunSwiglu(const KernelContext& ctx) {
  const Tensor& gu = ctx.input(0);    // (..., 2F)
  const Tensor& out = ctx.output(0);  // (..., F)
  CheckTensor(gu, gu.dtype(), "swiglu input");
  CheckTensor(out, gu.dtype(), "swiglu output");
  KILN_CHECK_EQ(LastDim(gu), 2 * LastDim(out));
  KILN_CHECK_EQ(Rows(gu), Rows(out));
  LaunchSwiglu(ToFloatType(gu.dtype()), gu.raw_data(), out.raw_data(), Rows(out), LastDim(out),
               LaunchStreamFor(gu));
}

void RunSwigluBackward(const KernelContext& ctx) {
  const Tensor& dy = ctx.input(0);    // (..., F)
  const Tensor& gu = ctx.input(1);    // (..., 2F)
  const Tensor& dgu = ctx.output(0);  // (..., 2F)
  CheckTensor(dy, dy.dtype(), "swiglu_backward dy");
  CheckTensor(gu, dy.dtype(), "swiglu_backward gu");
  CheckTensor(dgu, dy.dtype(), "swiglu_backward dgu");
  CheckSameShape(gu, dgu, "swiglu_backward");
  KILN_CHECK_EQ(LastDim(gu), 2 * LastDim(dy));
  LaunchSwigluBackward(ToFloatType(dy.dtype()), dy.raw_data(), gu.raw_data(), dgu.raw_data(),
                       Rows(dy), LastDim(dy), LaunchStreamFor(dy));
}

void RunBroadcastScalar(const KernelContext& ctx) {
  const auto& attrs = ctx.attrs_as<ops::BroadcastScalarAttrs>();
  const Tensor& s = ctx.input(0);  // [1] f32
  const Tensor& out = ctx.output(0);
  CheckTensor(s, DType::kF32, "broadcast_scalar s");
  CheckTensor(out, attrs.dtype, "broadcast_scalar output");
  LaunchFillFromScalar(ToFloatType(out.dtype()), out.raw_data(), out.numel(), s.data<float>(),
                       attrs.alpha, LaunchStreamFor(s));
}

void RunDropout(const KernelContext& ctx) {
  const auto& attrs = ctx.attrs_as<ops::DropoutAttrs>();
  const Tensor& x = ctx.input(0);
  const Tensor& rng = ctx.input(1);  // [2] i64: (seed, step)
  const Tensor& y = ctx.output(0);
  CheckTensor(x, x.dtype(), "dropout input");
  CheckTensor(rng, DType::kI64, "dropout rng");
  KILN_CHECK_EQ(rng.numel(), 2);
  CheckTensor(y, x.dtype(), "dropout output");
  CheckSameShape(x, y, "dropout");
  KILN_CHECK(attrs.p >= 0.0f && attrs.p <= 1.0f) << "dropout p = " << attrs.p;
  LaunchDropout(ToFloatType(x.dtype()), x.raw_data(), y.raw_data(), x.numel(), attrs.p,
                rng.data<int64_t>(), attrs.stream, LaunchStreamFor(x));
}

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("gelu", kCUDA, RunActivation<UnaryOp::kGelu>);
KILN_REGISTER_FLOAT_KERNEL_FNS("silu", kCUDA, RunActivation<UnaryOp::kSilu>);
KILN_REGISTER_FLOAT_KERNEL_FNS("gelu_backward", kCUDA, RunBinary<BinaryOp::kGeluBackward>);
KILN_REGISTER_FLOAT_KERNEL_FNS("silu_backward", kCUDA, RunBinary<BinaryOp::kSiluBackward>);
KILN_REGISTER_FLOAT_KERNEL_FNS("add", kCUDA, RunBinary<BinaryOp::kAdd>);
KILN_REGISTER_FLOAT_KERNEL_FNS("mul", kCUDA, RunBinary<BinaryOp::kMul>);
KILN_REGISTER_FLOAT_KERNEL_FNS("scale", kCUDA, RunScale<ScaleOp::kScale>);
KILN_REGISTER_FLOAT_KERNEL_FNS("scale_by", kCUDA, RunScale<ScaleOp::kScaleBy>);
KILN_REGISTER_FLOAT_KERNEL_FNS("cast", kCUDA, RunScale<ScaleOp::kCast>);
KILN_REGISTER_FLOAT_KERNEL_FNS("accumulate_grad", kCUDA, RunAccumulateGrad);
KILN_REGISTER_FLOAT_KERNEL_FNS("swiglu", kCUDA, RunSwiglu);
KILN_REGISTER_FLOAT_KERNEL_FNS("swiglu_backward", kCUDA, RunSwigluBackward);
KILN_REGISTER_FLOAT_KERNEL_FNS("dropout", kCUDA, RunDropout);
KILN_REGISTER_KERNEL_FN("broadcast_scalar", kCUDA, kF32, RunBroadcastScalar);

}  // namespace kiln::kernels::cuda
