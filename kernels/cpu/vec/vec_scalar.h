// Vec for CPUs without AVX2: one float lane, so every kernel body also runs as plain C++. Slow but
// complete; used when KILN_CPU_ISA=scalar or the CPU lacks AVX2 + FMA (vec.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/core/half.h"

namespace kiln::kernels::cpu::scalar {

struct Vec {
  static constexpr int kWidth = 1;
  using Mask = bool;
  float v;

  static Vec Zero() { return {0.0f}; }
  static Vec Broadcast(float f) { return {f}; }

  static Vec Load(const float* p) { return {*p}; }
  static Vec Load(const BFloat16* p) { return {BFloat16::ToFloat(p->bits)}; }
  static Vec Load(const Float16* p) { return {Float16::ToFloat(p->bits)}; }
  template <typename T>
  static Vec LoadPartial(const T* p, int /*n*/) {
    return Load(p);  // never called: every tail of a 1-lane vector is full
  }

  // Lanes [0, n) of v, the rest from fill.
  static Vec FirstLanes(Vec v, int n, Vec fill) { return n > 0 ? v : fill; }

  void Store(float* p) const { *p = v; }
  void Store(BFloat16* p) const { p->bits = BFloat16::FromFloat(v); }
  void Store(Float16* p) const { p->bits = Float16::FromFloat(v); }
  template <typename T>
  void StorePartial(T* p, int /*n*/) const {
    Store(p);
  }
};

inline Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
inline Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
inline Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
// a * b + c (not fused: without FMA hardware std::fma is a slow library call).
inline Vec Fma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
// 1/a (exact division; the vector ISAs use an approximation refined to about 1 ulp).
inline Vec FastReciprocal(Vec a) { return {1.0f / a.v}; }
// Min/Max return b when either is NaN, like the x86 instructions the other ISAs use.
inline Vec Min(Vec a, Vec b) { return {a.v < b.v ? a.v : b.v}; }
inline Vec Max(Vec a, Vec b) { return {a.v > b.v ? a.v : b.v}; }
inline Vec RoundNearest(Vec a) { return {std::nearbyint(a.v)}; }
// x * 2^n for integral n in [-150, 128], as two normal factors (see vec_avx2.h).
inline Vec ScaleByPow2(Vec x, Vec n) {
  if (std::isnan(n.v)) return {n.v};
  const int32_t ni = static_cast<int32_t>(n.v);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23;
  const uint32_t b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float p1, p2;
  std::memcpy(&p1, &b1, 4);
  std::memcpy(&p2, &b2, 4);
  return {x.v * p1 * p2};
}
inline Vec::Mask Less(Vec a, Vec b) { return a.v < b.v; }
inline Vec Select(Vec::Mask m, Vec a, Vec b) { return m ? a : b; }

// Transposes a 1 x 1 block: nothing to do.
inline void Transpose(Vec (&)[1]) {}

inline float FirstLane(Vec a) { return a.v; }
inline float ReduceAdd(Vec a) { return a.v; }
inline float ReduceMax(Vec a) { return a.v; }

}  // namespace kiln::kernels::cpu::scalar
