// Vec for AVX2 + FMA + F16C: 8 float lanes, loads and stores of f32, bf16 and f16 with conversion.
// Tails go through a small stack buffer (AVX2 has no 16-bit masked moves). Only for translation
// units built with the AVX2 flags (vec.h).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "engine/core/half.h"
#include "kernels/cpu/vec/vec_inline.h"

namespace kiln::kernels::cpu::avx2 {

// f32 -> bf16 bits, round to nearest even with NaN kept quiet: exactly kiln::BFloat16::FromFloat.
KILN_VEC_INLINE __m128i FloatToBf16Bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i bits = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
  // Every lane is < 2^16, so the unsigned saturating pack is exact.
  return _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
}

struct Vec {
  static constexpr int kWidth = 8;
  using Mask = __m256;  // all-ones lanes
  __m256 v;

  KILN_VEC_INLINE static Vec Zero() { return {_mm256_setzero_ps()}; }
  KILN_VEC_INLINE static Vec Broadcast(float f) { return {_mm256_set1_ps(f)}; }

  KILN_VEC_INLINE static Vec Load(const float* p) { return {_mm256_loadu_ps(p)}; }
  KILN_VEC_INLINE static Vec Load(const BFloat16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))};
  }
  KILN_VEC_INLINE static Vec Load(const Float16* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  template <typename T>
  KILN_VEC_INLINE static Vec LoadPartial(const T* p, int n) {
    T buf[kWidth] = {};
    std::memcpy(buf, p, n * sizeof(T));
    return Load(buf);
  }

  // Lanes [0, n) of v, the rest from fill.
  KILN_VEC_INLINE static Vec FirstLanes(Vec v, int n, Vec fill) {
    const __m256 keep = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    return {_mm256_blendv_ps(fill.v, v.v, keep)};
  }

  KILN_VEC_INLINE void Store(float* p) const { _mm256_storeu_ps(p, v); }
  KILN_VEC_INLINE void Store(BFloat16* p) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), FloatToBf16Bits(v));
  }
  KILN_VEC_INLINE void Store(Float16* p) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  template <typename T>
  KILN_VEC_INLINE void StorePartial(T* p, int n) const {
    T buf[kWidth];
    Store(buf);
    std::memcpy(p, buf, n * sizeof(T));
  }
};

KILN_VEC_INLINE Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
// a * b + c, fused.
KILN_VEC_INLINE Vec Fma(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
// 1/a to about 1 ulp for finite, normal a (12-bit rcp plus two Newton steps); not for 0 or inf.
KILN_VEC_INLINE Vec FastReciprocal(Vec a) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 r = _mm256_rcp_ps(a.v);
  r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(a.v, r, one), r);
  return {_mm256_fmadd_ps(r, _mm256_fnmadd_ps(a.v, r, one), r)};
}
// Min/Max return b when either lane is NaN (x86 semantics): pass data as b to propagate NaN.
KILN_VEC_INLINE Vec Min(Vec a, Vec b) { return {_mm256_min_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec Max(Vec a, Vec b) { return {_mm256_max_ps(a.v, b.v)}; }
// x * 2^n for integral n in [-150, 128]: two factors 2^(n/2) keep each one a normal float, so
// results in the subnormal range come out right.
KILN_VEC_INLINE Vec ScaleByPow2(Vec x, Vec n) {
  const __m256i ni = _mm256_cvtps_epi32(n.v);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return {_mm256_mul_ps(_mm256_mul_ps(x.v, p1), p2)};
}
KILN_VEC_INLINE Vec::Mask Less(Vec a, Vec b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
// Lanes of a where m is set, else lanes of b.
KILN_VEC_INLINE Vec Select(Vec::Mask m, Vec a, Vec b) { return {_mm256_blendv_ps(b.v, a.v, m)}; }

// Transposes the 8 x 8 block held in rows[0..7] (row i becomes column i): unpack pairs of rows,
// shuffle within 128-bit lanes into 4 x 4 blocks, then exchange the 128-bit halves.
KILN_VEC_INLINE void Transpose(Vec (&rows)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(rows[2 * i].v, rows[2 * i + 1].v);
    t[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i].v, rows[2 * i + 1].v);
  }
  // u[4i + j], 128-bit half k: column 4k + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    rows[j].v = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);      // low halves
    rows[4 + j].v = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);  // high halves
  }
}

KILN_VEC_INLINE float FirstLane(Vec a) { return _mm256_cvtss_f32(a.v); }
KILN_VEC_INLINE float ReduceAdd(Vec a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
KILN_VEC_INLINE float ReduceMax(Vec a) {
  const __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  const __m128 s2 = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

}  // namespace kiln::kernels::cpu::avx2
