// Transcendental functions on Vec, written once for every ISA: exp, sigmoid and the activation
// formulas built on them (GELU tanh approximation, SiLU). Accurate to a few ulp in f32; NaN
// propagates. Include after vec.h.
#pragma once

#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {

// e^x: x = n*ln2 + r with |r| <= ln2/2, a degree-6 polynomial for e^r (coefficients from a
// least-squares fit of the relative error on that interval: max error 1.4 * 2^-24, like Taylor
// to degree 7), then scaling by 2^n. Underflows to 0 (through subnormals) below about -103.9 and
// saturates near FLT_MAX above 88.72.
KILN_VEC_INLINE Vec Exp(Vec x) {
  x = Max(Vec::Broadcast(-104.0f), Min(Vec::Broadcast(88.7228f), x));
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 drops the fraction bits (|x / ln2| <
  // 2^22). Two ops on the FMA ports, where AVX-512's vrndscaleps is two uops on port 0 alone.
  const Vec magic = Vec::Broadcast(12582912.0f);
  const Vec n = Fma(x, Vec::Broadcast(1.44269504088896341f), magic) - magic;
  // Cody-Waite: ln2 split into a part exact in a few bits and the rest.
  Vec r = Fma(n, Vec::Broadcast(-0.693359375f), x);
  r = Fma(n, Vec::Broadcast(2.12194440e-4f), r);
  Vec p = Vec::Broadcast(1.3751408551e-03f);
  p = Fma(p, r, Vec::Broadcast(8.3689186722e-03f));
  p = Fma(p, r, Vec::Broadcast(4.1669532657e-02f));
  p = Fma(p, r, Vec::Broadcast(1.6666518152e-01f));
  p = Fma(p, r, Vec::Broadcast(4.9999988079e-01f));
  p = Fma(p, r, Vec::Broadcast(1.0f));
  p = Fma(p, r, Vec::Broadcast(1.0f));
  return ScaleByPow2(p, n);
}

// 1 / (1 + e^-x). The denominator is in [1, FLT_MAX] (Exp saturates), so the fast reciprocal is
// safe.
KILN_VEC_INLINE Vec Sigmoid(Vec x) {
  const Vec one = Vec::Broadcast(1.0f);
  return FastReciprocal(one + Exp(Vec::Zero() - x));
}

// Note [GELU tanh approximation]
// gelu(x) = 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), as PyTorch's
// gelu(approximate="tanh"). Since 0.5 (1 + tanh(u)) = sigmoid(2u) = s, this is x s, and with
// e = exp(-2u) (so 1 - s = e s) the derivative is s + 2 x e s^2 sqrt(2/pi) (1 + 3 * 0.044715 x^2):
// one exp and one reciprocal per element, and no 1 - tanh^2 cancellation for large |u|.
constexpr float kGeluBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluKappa = 0.044715f;

// -2u = -2 sqrt(2/pi) x (1 + 0.044715 x^2), from x and x^2.
KILN_VEC_INLINE Vec GeluMinusTwoU(Vec x, Vec x_sq) {
  return (x * Vec::Broadcast(-2.0f * kGeluBeta)) *
         Fma(Vec::Broadcast(kGeluKappa), x_sq, Vec::Broadcast(1.0f));
}

KILN_VEC_INLINE Vec Gelu(Vec x) {
  const Vec e = Exp(GeluMinusTwoU(x, x * x));
  return x * FastReciprocal(Vec::Broadcast(1.0f) + e);
}

// dy * gelu'(x).
KILN_VEC_INLINE Vec GeluBackward(Vec dy, Vec x) {
  const Vec x_sq = x * x;
  const Vec e = Exp(GeluMinusTwoU(x, x_sq));
  const Vec s = FastReciprocal(Vec::Broadcast(1.0f) + e);
  // 2 x u' = x (2 sqrt(2/pi) + 6 sqrt(2/pi) 0.044715 x^2).
  const Vec two_x_du = x * Fma(Vec::Broadcast(6.0f * kGeluBeta * kGeluKappa), x_sq,
                               Vec::Broadcast(2.0f * kGeluBeta));
  // (e s) s rather than e (s s): e may be huge where s is tiny.
  return dy * Fma(two_x_du, (e * s) * s, s);
}

// silu(x) = x * sigmoid(x).
KILN_VEC_INLINE Vec Silu(Vec x) { return x * Sigmoid(x); }

// dy * silu'(x) = dy * s (1 + x (1 - s)), s = sigmoid(x).
KILN_VEC_INLINE Vec SiluBackward(Vec dy, Vec x) {
  const Vec one = Vec::Broadcast(1.0f);
  const Vec s = Sigmoid(x);
  return dy * s * Fma(x, one - s, one);
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
