// CPU kernels of the element-wise ops (engine/ops/attrs/elementwise.h, loss.h for dropout):
// unpack the bound tensors, check the contract, and call the active ISA's body (isa_api.h).
// f32, bf16 and f16 everywhere; compute in f32.
#include "engine/core/rng.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// y = op(x) with y like x.
template <UnaryOp kOp>
void RunActivation(const KernelContext& ctx) {
  CheckActivation(ctx, DeviceType::kCPU);
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  Isa().unary({kOp, x.dtype(), y.dtype(), x.raw_data(), y.raw_data(), x.numel(), 1.0f});
}

// y = alpha * x, converting dtype (scale; scale_by with alpha = s[0]; cast with alpha = 1).
template <ScaleOp kOp>
void RunScale(const KernelContext& ctx) {
  CheckScale(ctx, DeviceType::kCPU, kOp);
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  const float alpha = kOp == ScaleOp::kScale     ? ctx.attrs_as<ops::ScaleAttrs>().alpha
                      : kOp == ScaleOp::kScaleBy ? ctx.input(1).data<float>()[0]
                                                 : 1.0f;
  Isa().unary(
      {UnaryOp::kScale, x.dtype(), y.dtype(), x.raw_data(), y.raw_data(), x.numel(), alpha});
}

// out = a op b with b's shape a suffix of a's (kAdd) or equal to it.
template <BinaryOp kOp>
void RunBinary(const KernelContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const Tensor& out = ctx.output(0);
  CheckBinary(ctx, DeviceType::kCPU, kOp == BinaryOp::kAdd);
  if (a.numel() == 0) return;
  Isa().binary({kOp, a.dtype(), b.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), a.numel(),
                b.numel()});
}

// G (f32) += g: output 0 is the gradient slot, read and written.
void RunAccumulateGrad(const KernelContext& ctx) {
  const Tensor& g = ctx.input(0);
  const Tensor& acc = ctx.output(0);
  KILN_CHECK(IsFloating(acc.dtype())) << "accumulate_grad G is " << acc.dtype();
  KILN_CHECK_EQ(acc.numel(), g.numel());
  if (g.numel() == 0) return;
  Isa().binary({BinaryOp::kAdd, acc.dtype(), g.dtype(), acc.raw_data(), g.raw_data(),
                acc.raw_data(), g.numel(), g.numel()});
}

void RunSwiglu(const KernelContext& ctx) {
  const Tensor& gu = ctx.input(0);    // (..., 2F)
  const Tensor& out = ctx.output(0);  // (..., F)
  CheckTensor(out, gu.dtype(), "swiglu output");
  KILN_CHECK_EQ(LastDim(gu), 2 * LastDim(out));
  KILN_CHECK_EQ(Rows(gu), Rows(out));
  Isa().swiglu({gu.dtype(), nullptr, gu.raw_data(), out.raw_data(), Rows(out), LastDim(out)});
}

void RunSwigluBackward(const KernelContext& ctx) {
  const Tensor& dy = ctx.input(0);    // (..., F)
  const Tensor& gu = ctx.input(1);    // (..., 2F)
  const Tensor& dgu = ctx.output(0);  // (..., 2F)
  CheckTensor(gu, dy.dtype(), "swiglu_backward gu");
  CheckTensor(dgu, dy.dtype(), "swiglu_backward dgu");
  CheckSameShape(gu, dgu, "swiglu_backward");
  KILN_CHECK_EQ(LastDim(gu), 2 * LastDim(dy));
  Isa().swiglu_backward(
      {dy.dtype(), dy.raw_data(), gu.raw_data(), dgu.raw_data(), Rows(dy), LastDim(dy)});
}

void RunBroadcastScalar(const KernelContext& ctx) {
  const auto& attrs = ctx.attrs_as<ops::BroadcastScalarAttrs>();
  const Tensor& s = ctx.input(0);  // [1] f32
  const Tensor& out = ctx.output(0);
  CheckTensor(s, DType::kF32, "broadcast_scalar s");
  CheckTensor(out, attrs.dtype, "broadcast_scalar output");
  Isa().fill({out.dtype(), out.raw_data(), out.numel(), s.data<float>()[0] * attrs.alpha});
}

// Note [Dropout stream]
// The mask must be a pure function of (seed, step, stream, element index), identical on every
// backend. Philox::Generate takes a 64-bit counter, too narrow to hold all three, so one call
// derives a per-(step, stream) key: words 0 and 1 of Philox(seed, counter = step << 32 | stream).
// Element i then reads word i % 4 of Philox(key, counter = i / 4) and is kept when its uniform
// value (Philox::ToUniform) is >= p. Steps are taken modulo 2^32.
uint64_t DropoutKey(uint64_t seed, uint64_t step, uint32_t stream) {
  uint32_t words[4];
  Philox::Generate(seed, (step << 32) | stream, words);
  return static_cast<uint64_t>(words[0]) | (static_cast<uint64_t>(words[1]) << 32);
}

void RunDropout(const KernelContext& ctx) {
  const auto& attrs = ctx.attrs_as<ops::DropoutAttrs>();
  const Tensor& x = ctx.input(0);
  const Tensor& rng = ctx.input(1);  // [2] i64: (seed, step)
  const Tensor& y = ctx.output(0);
  CheckTensor(rng, DType::kI64, "dropout rng");
  KILN_CHECK_EQ(rng.numel(), 2);
  CheckTensor(y, x.dtype(), "dropout output");
  CheckSameShape(x, y, "dropout");
  KILN_CHECK(attrs.p >= 0.0f && attrs.p <= 1.0f) << "dropout p = " << attrs.p;
  const int64_t* seed_step = rng.data<int64_t>();
  Isa().dropout({x.dtype(), x.raw_data(), y.raw_data(), x.numel(), attrs.p,
                 DropoutKey(static_cast<uint64_t>(seed_step[0]),
                            static_cast<uint64_t>(seed_step[1]), attrs.stream)});
}

}  // namespace

KILN_REGISTER_FLOAT_KERNEL_FNS("gelu", kCPU, RunActivation<UnaryOp::kGelu>);
KILN_REGISTER_FLOAT_KERNEL_FNS("silu", kCPU, RunActivation<UnaryOp::kSilu>);
KILN_REGISTER_FLOAT_KERNEL_FNS("gelu_backward", kCPU, RunBinary<BinaryOp::kGeluBackward>);
KILN_REGISTER_FLOAT_KERNEL_FNS("silu_backward", kCPU, RunBinary<BinaryOp::kSiluBackward>);
KILN_REGISTER_FLOAT_KERNEL_FNS("add", kCPU, RunBinary<BinaryOp::kAdd>);
KILN_REGISTER_FLOAT_KERNEL_FNS("mul", kCPU, RunBinary<BinaryOp::kMul>);
KILN_REGISTER_FLOAT_KERNEL_FNS("scale", kCPU, RunScale<ScaleOp::kScale>);
KILN_REGISTER_FLOAT_KERNEL_FNS("scale_by", kCPU, RunScale<ScaleOp::kScaleBy>);
KILN_REGISTER_FLOAT_KERNEL_FNS("cast", kCPU, RunScale<ScaleOp::kCast>);
KILN_REGISTER_FLOAT_KERNEL_FNS("accumulate_grad", kCPU, RunAccumulateGrad);
KILN_REGISTER_FLOAT_KERNEL_FNS("swiglu", kCPU, RunSwiglu);
KILN_REGISTER_FLOAT_KERNEL_FNS("swiglu_backward", kCPU, RunSwigluBackward);
KILN_REGISTER_KERNEL_FN("broadcast_scalar", kCPU, kF32, RunBroadcastScalar);
KILN_REGISTER_FLOAT_KERNEL_FNS("dropout", kCPU, RunDropout);

}  // namespace kiln::kernels::cpu
