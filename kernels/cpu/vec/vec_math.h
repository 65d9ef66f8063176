// Transcendental functions on Vec, written once for every ISA: exp, tanh, sigmoid and the
// activation formulas built on them (GELU tanh approximation, SiLU). Accurate to a few ulp in f32;
// NaN propagates. Include after vec.h.
#pragma once

#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {

// e^x: x = n*ln2 + r with |r| <= ln2/2, a degree-7 Taylor polynomial for e^r (error below 1 ulp
// on that interval), then scaling by 2^n. Underflows to 0 (through subnormals) below about -103.9
// and saturates near FLT_MAX above 88.72.
inline Vec Exp(Vec x) {
  x = Max(Vec::Broadcast(-104.0f), Min(Vec::Broadcast(88.7228f), x));
  const Vec n = RoundNearest(x * Vec::Broadcast(1.44269504088896341f));
  // Cody-Waite: ln2 split into a part exact in a few bits and the rest.
  Vec r = Fma(n, Vec::Broadcast(-0.693359375f), x);
  r = Fma(n, Vec::Broadcast(2.12194440e-4f), r);
  Vec p = Vec::Broadcast(1.0f / 5040);
  p = Fma(p, r, Vec::Broadcast(1.0f / 720));
  p = Fma(p, r, Vec::Broadcast(1.0f / 120));
  p = Fma(p, r, Vec::Broadcast(1.0f / 24));
  p = Fma(p, r, Vec::Broadcast(1.0f / 6));
  p = Fma(p, r, Vec::Broadcast(0.5f));
  p = Fma(p, r, Vec::Broadcast(1.0f));
  p = Fma(p, r, Vec::Broadcast(1.0f));
  return ScaleByPow2(p, n);
}

// tanh(x). Note [tanh]: for |x| < 0.625 an odd polynomial x + x^3 P(x^2) (least-squares fit of
// relative error, max error 1.4 ulp in f32); above it 1 - 2 / (e^(2|x|) + 1), which has no
// cancellation there because the result is at least 0.55.
inline Vec Tanh(Vec x) {
  const Vec ax = Abs(x);
  const Vec z = x * x;
  Vec p = Vec::Broadcast(-5.691885948e-03f);
  p = Fma(p, z, Vec::Broadcast(2.062620595e-02f));
  p = Fma(p, z, Vec::Broadcast(-5.373529345e-02f));
  p = Fma(p, z, Vec::Broadcast(1.333138049e-01f));
  p = Fma(p, z, Vec::Broadcast(-3.333328068e-01f));
  const Vec small = Fma(x * z, p, x);
  const Vec one = Vec::Broadcast(1.0f);
  const Vec e = Exp(ax + ax);
  const Vec large = CopySign(one - Vec::Broadcast(2.0f) / (e + one), x);
  return Select(Less(ax, Vec::Broadcast(0.625f)), small, large);
}

// 1 / (1 + e^-x).
inline Vec Sigmoid(Vec x) {
  const Vec one = Vec::Broadcast(1.0f);
  return one / (one + Exp(Vec::Zero() - x));
}

// Note [GELU tanh approximation]
// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), and
// gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2),
// the same formulas (and evaluation order) as PyTorch's gelu(approximate="tanh") CPU kernel.
constexpr float kGeluBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluKappa = 0.044715f;

inline Vec Gelu(Vec x) {
  const Vec x_cube = x * x * x;
  const Vec inner = Vec::Broadcast(kGeluBeta) * Fma(Vec::Broadcast(kGeluKappa), x_cube, x);
  return Vec::Broadcast(0.5f) * x * (Vec::Broadcast(1.0f) + Tanh(inner));
}

// dy * gelu'(x).
inline Vec GeluBackward(Vec dy, Vec x) {
  const Vec one = Vec::Broadcast(1.0f);
  const Vec x_sq = x * x;
  const Vec inner = Vec::Broadcast(kGeluBeta) * Fma(Vec::Broadcast(kGeluKappa) * x_sq, x, x);
  const Vec t = Tanh(inner);
  const Vec left = Vec::Broadcast(0.5f) * x;
  const Vec left_derivative = Vec::Broadcast(0.5f) * (one + t);
  const Vec inner_derivative =
      Vec::Broadcast(kGeluBeta) * Fma(Vec::Broadcast(3.0f * kGeluKappa), x_sq, one);
  const Vec right_derivative = (one - t * t) * inner_derivative;
  return dy * Fma(left, right_derivative, left_derivative);
}

// silu(x) = x * sigmoid(x).
inline Vec Silu(Vec x) { return x * Sigmoid(x); }

// dy * silu'(x) = dy * s (1 + x (1 - s)), s = sigmoid(x).
inline Vec SiluBackward(Vec dy, Vec x) {
  const Vec one = Vec::Broadcast(1.0f);
  const Vec s = Sigmoid(x);
  return dy * s * Fma(x, one - s, one);
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
