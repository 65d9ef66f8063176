// Vec for CPUs without AVX2: one float lane, so every kernel body also runs as plain C++. Slow but
// complete; used when KILN_CPU_ISA=scalar or the CPU lacks AVX2 + FMA (vec.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/core/half.h"
#include "kernels/cpu/vec/vec_inline.h"

namespace kiln::kernels::cpu::scalar {

struct Vec {
  static constexpr int kWidth = 1;
  using Mask = bool;
  float v;

  KILN_VEC_INLINE static Vec Zero() { return {0.0f}; }
  KILN_VEC_INLINE static Vec Broadcast(float f) { return {f}; }

  KILN_VEC_INLINE static Vec Load(const float* p) { return {*p}; }
  KILN_VEC_INLINE static Vec Load(const BFloat16* p) { return {BFloat16::ToFloat(p->bits)}; }
  KILN_VEC_INLINE static Vec Load(const Float16* p) { return {Float16::ToFloat(p->bits)}; }
  template <typename T>
  KILN_VEC_INLINE static Vec LoadPartial(const T* p, int /*n*/) {
    return Load(p);  // never called: every tail of a 1-lane vector is full
  }

  // Lanes [0, n) of v, the rest from fill.
  KILN_VEC_INLINE static Vec FirstLanes(Vec v, int n, Vec fill) { return n > 0 ? v : fill; }

  KILN_VEC_INLINE void Store(float* p) const { *p = v; }
  KILN_VEC_INLINE void Store(BFloat16* p) const { p->bits = BFloat16::FromFloat(v); }
  KILN_VEC_INLINE void Store(Float16* p) const { p->bits = Float16::FromFloat(v); }
  template <typename T>
  KILN_VEC_INLINE void StorePartial(T* p, int /*n*/) const {
    Store(p);
  }
};

KILN_VEC_INLINE Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
KILN_VEC_INLINE Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
KILN_VEC_INLINE Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
// a * b + c (not fused: without FMA hardware std::fma is a slow library call).
KILN_VEC_INLINE Vec Fma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
// 1/a (exact division; the vector ISAs use an approximation refined to about 1 ulp).
KILN_VEC_INLINE Vec FastReciprocal(Vec a) { return {1.0f / a.v}; }
// Min/Max return b when either is NaN, like the x86 instructions the other ISAs use.
KILN_VEC_INLINE Vec Min(Vec a, Vec b) { return {a.v < b.v ? a.v : b.v}; }
KILN_VEC_INLINE Vec Max(Vec a, Vec b) { return {a.v > b.v ? a.v : b.v}; }
// x * 2^n for integral n in [-150, 128], as two normal factors (see vec_avx2.h).
KILN_VEC_INLINE Vec ScaleByPow2(Vec x, Vec n) {
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
KILN_VEC_INLINE Vec::Mask Less(Vec a, Vec b) { return a.v < b.v; }
KILN_VEC_INLINE Vec Select(Vec::Mask m, Vec a, Vec b) { return m ? a : b; }

// Transposes a 1 x 1 block: nothing to do.
KILN_VEC_INLINE void Transpose(Vec (&)[1]) {}

KILN_VEC_INLINE float FirstLane(Vec a) { return a.v; }
KILN_VEC_INLINE float ReduceAdd(Vec a) { return a.v; }
KILN_VEC_INLINE float ReduceMax(Vec a) { return a.v; }

}  // namespace kiln::kernels::cpu::scalar
