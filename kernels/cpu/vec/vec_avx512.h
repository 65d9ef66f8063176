// Vec for AVX-512 (F, BW, VL, DQ): 16 float lanes, loads and stores of f32, bf16 and f16 with
// conversion, masked tails. Only for translation units built with the AVX-512 flags (vec.h).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "engine/core/half.h"
#include "kernels/cpu/vec/vec_inline.h"

namespace kiln::kernels::cpu::avx512 {

// f32 -> bf16 bits, round to nearest even with NaN kept quiet: exactly kiln::BFloat16::FromFloat.
KILN_VEC_INLINE __m256i FloatToBf16Bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, quiet_nan));
}

KILN_VEC_INLINE __m512 Bf16BitsToFloat(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

struct Vec {
  static constexpr int kWidth = 16;
  using Mask = __mmask16;
  __m512 v;

  KILN_VEC_INLINE static Vec Zero() { return {_mm512_setzero_ps()}; }
  KILN_VEC_INLINE static Vec Broadcast(float f) { return {_mm512_set1_ps(f)}; }

  KILN_VEC_INLINE static Vec Load(const float* p) { return {_mm512_loadu_ps(p)}; }
  KILN_VEC_INLINE static Vec Load(const BFloat16* p) {
    return {Bf16BitsToFloat(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  KILN_VEC_INLINE static Vec Load(const Float16* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  KILN_VEC_INLINE static Vec LoadPartial(const float* p, int n) {
    return {_mm512_maskz_loadu_ps(TailMask(n), p)};
  }
  KILN_VEC_INLINE static Vec LoadPartial(const BFloat16* p, int n) {
    return {Bf16BitsToFloat(_mm256_maskz_loadu_epi16(TailMask(n), p))};
  }
  KILN_VEC_INLINE static Vec LoadPartial(const Float16* p, int n) {
    return {_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(TailMask(n), p))};
  }

  KILN_VEC_INLINE void Store(float* p) const { _mm512_storeu_ps(p, v); }
  KILN_VEC_INLINE void Store(BFloat16* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), FloatToBf16Bits(v));
  }
  KILN_VEC_INLINE void Store(Float16* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, kRoundNearest));
  }
  KILN_VEC_INLINE void StorePartial(float* p, int n) const {
    _mm512_mask_storeu_ps(p, TailMask(n), v);
  }
  KILN_VEC_INLINE void StorePartial(BFloat16* p, int n) const {
    _mm256_mask_storeu_epi16(p, TailMask(n), FloatToBf16Bits(v));
  }
  KILN_VEC_INLINE void StorePartial(Float16* p, int n) const {
    _mm256_mask_storeu_epi16(p, TailMask(n), _mm512_cvtps_ph(v, kRoundNearest));
  }

  // Lanes [0, n) of v, the rest from fill.
  KILN_VEC_INLINE static Vec FirstLanes(Vec v, int n, Vec fill) {
    return {_mm512_mask_blend_ps(TailMask(n), fill.v, v.v)};
  }

  KILN_VEC_INLINE static __mmask16 TailMask(int n) {
    return static_cast<__mmask16>((1u << n) - 1u);
  }
  static constexpr int kRoundNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
};

KILN_VEC_INLINE Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
// a * b + c, fused.
KILN_VEC_INLINE Vec Fma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
// 1/a to about 1 ulp for finite, normal a (rcp14 plus one Newton step); not for 0 or inf.
KILN_VEC_INLINE Vec FastReciprocal(Vec a) {
  const __m512 r = _mm512_rcp14_ps(a.v);
  return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(1.0f)), r)};
}
// Min/Max return b when either lane is NaN (x86 semantics): pass data as b to propagate NaN.
KILN_VEC_INLINE Vec Min(Vec a, Vec b) { return {_mm512_min_ps(a.v, b.v)}; }
KILN_VEC_INLINE Vec Max(Vec a, Vec b) { return {_mm512_max_ps(a.v, b.v)}; }
// x * 2^n for integral n in [-150, 128], correct into the subnormal range.
KILN_VEC_INLINE Vec ScaleByPow2(Vec x, Vec n) { return {_mm512_scalef_ps(x.v, n.v)}; }
KILN_VEC_INLINE Vec::Mask Less(Vec a, Vec b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
// Lanes of a where m is set, else lanes of b.
KILN_VEC_INLINE Vec Select(Vec::Mask m, Vec a, Vec b) {
  return {_mm512_mask_blend_ps(m, b.v, a.v)};
}

// Transposes the 16 x 16 block held in rows[0..15] (row i becomes column i): unpack pairs of rows,
// shuffle within 128-bit lanes into 4 x 4 blocks, then exchange the 128-bit lanes.
KILN_VEC_INLINE void Transpose(Vec (&rows)[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(rows[2 * i].v, rows[2 * i + 1].v);
    t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i].v, rows[2 * i + 1].v);
  }
  // u[4i + j], 128-bit lane k: column 4k + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 ab_lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);  // a0 a1 b0 b1
    const __m512 ab_hi = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xee);  // a2 a3 b2 b3
    const __m512 cd_lo = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 cd_hi = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xee);
    rows[j].v = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);       // lane 0 of a, b, c, d
    rows[4 + j].v = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xdd);   // lane 1
    rows[8 + j].v = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);   // lane 2
    rows[12 + j].v = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xdd);  // lane 3
  }
}

KILN_VEC_INLINE float FirstLane(Vec a) { return _mm512_cvtss_f32(a.v); }
KILN_VEC_INLINE float ReduceAdd(Vec a) { return _mm512_reduce_add_ps(a.v); }
KILN_VEC_INLINE float ReduceMax(Vec a) { return _mm512_reduce_max_ps(a.v); }

}  // namespace kiln::kernels::cpu::avx512
