// Tile products and packing for the fused attention bodies (per ISA; include after vec.h): a
// register-blocked f32 GEMM on padded tiles and the conversions of q/k/v/dout rows into them.
#pragma once

#include "kernels/cpu/attention_layout.h"
#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {

// Register block of the micro-kernel: kTileRows rows x kTileVecs vectors of C stay in registers
// (AVX-512: 24 of 32 zmm; AVX2: 12 of 16 ymm).
#if defined(KILN_ISA_AVX512)
constexpr int kTileRows = 6, kTileVecs = 4;
#elif defined(KILN_ISA_AVX2)
constexpr int kTileRows = 6, kTileVecs = 2;
#else
constexpr int kTileRows = 4, kTileVecs = 4;
#endif
// Depth per pass, so that a (depth x kTileVecs vectors) panel of B stays in L1.
constexpr int64_t kTileDepth = 256;

// C (R x V vectors) (+)= A (R x k) B (k x V vectors); A(r, p) = a[r * a_rs + p * a_cs].
template <int R, int V>
inline void MicroKernel(int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                        int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int kW = Vec::kWidth;
  Vec acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      acc[r][v] = accumulate ? Vec::Load(c + r * ldc + v * kW) : Vec::Zero();
    }
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    Vec bv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bv[v] = Vec::Load(bp + v * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec av = Vec::Broadcast(a[r * a_rs + p * a_cs]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = Fma(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v].Store(c + r * ldc + v * kW);
  }
}

// Picks the micro-kernel for an edge block of `rows` <= R rows and `vecs` <= V vectors.
template <int R, int V>
inline void MicroKernelEdge(int rows, int vecs, int64_t k, const float* a, int64_t a_rs,
                            int64_t a_cs, const float* b, int64_t ldb, float* c, int64_t ldc,
                            bool accumulate) {
  if constexpr (R > 1) {
    if (rows < R) {
      MicroKernelEdge<R - 1, V>(rows, vecs, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
      return;
    }
  }
  if constexpr (V > 1) {
    if (vecs < V) {
      MicroKernelEdge<R, V - 1>(rows, vecs, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
      return;
    }
  }
  MicroKernel<R, V>(k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
}

// C (m x n) = A (m x k) B (k x n), or C += A B when accumulate. A(i, p) = a[i * a_rs + p * a_cs]
// (so a transposed A is just swapped strides); B and C row-major with n a multiple of the vector
// width (tiles are padded). k >= 1.
inline void TileGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
                     const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int kW = Vec::kWidth;
  for (int64_t p0 = 0; p0 < k; p0 += kTileDepth) {
    const int64_t depth = k - p0 < kTileDepth ? k - p0 : kTileDepth;
    const bool acc = accumulate || p0 > 0;
    for (int64_t j = 0; j < n; j += kTileVecs * kW) {
      const int64_t vecs_left = (n - j) / kW;
      const int vecs = static_cast<int>(vecs_left < kTileVecs ? vecs_left : kTileVecs);
      for (int64_t i = 0; i < m; i += kTileRows) {
        const int rows = static_cast<int>(m - i < kTileRows ? m - i : kTileRows);
        MicroKernelEdge<kTileRows, kTileVecs>(rows, vecs, depth, a + i * a_rs + p0 * a_cs, a_rs,
                                              a_cs, b + p0 * ldb + j, ldb, c + i * ldc + j, ldc,
                                              acc);
      }
    }
  }
}

// dst (rows, ld) = scale * src (rows, d) with source row stride src_stride; columns [d, ld) = 0.
template <typename T>
inline void PackRows(float* dst, int64_t ld, const T* src, int64_t src_stride, int64_t rows,
                     int64_t d, float scale) {
  const Vec s = Vec::Broadcast(scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* out = dst + r * ld;
    const T* in = src + r * src_stride;
    ForEachVector(0, d, [&](int64_t i, int w) { StoreN(LoadN(in + i, w) * s, out + i, w); });
    for (int64_t i = d; i < ld; ++i) out[i] = 0.0f;
  }
}

// dst (d, ld) = transpose of src (rows, d) with source row stride src_stride; columns [rows, ld)
// are zero. Blocks of kWidth x kWidth go through registers (Transpose); ld >= rows rounded up to
// a multiple of kWidth.
template <typename T>
inline void PackTransposed(float* dst, int64_t ld, const T* src, int64_t src_stride, int64_t rows,
                           int64_t d) {
  constexpr int kW = Vec::kWidth;
  for (int64_t r0 = 0; r0 < rows; r0 += kW) {
    const int nr = static_cast<int>(rows - r0 < kW ? rows - r0 : kW);
    for (int64_t c0 = 0; c0 < d; c0 += kW) {
      const int nc = static_cast<int>(d - c0 < kW ? d - c0 : kW);
      Vec block[kW];
      for (int r = 0; r < kW; ++r) {
        block[r] = r < nr ? LoadN(src + (r0 + r) * src_stride + c0, nc) : Vec::Zero();
      }
      Transpose(block);
      for (int c = 0; c < nc; ++c) block[c].Store(dst + (c0 + c) * ld + r0);
    }
  }
  const int64_t written = (rows + kW - 1) / kW * kW;
  for (int64_t c = 0; c < d; ++c) {
    for (int64_t r = written; r < ld; ++r) dst[c * ld + r] = 0.0f;
  }
}

// dst (rows, d) of row stride dst_stride = src (rows, ld) converted to T.
template <typename T>
inline void UnpackRows(T* dst, int64_t dst_stride, const float* src, int64_t ld, int64_t rows,
                       int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * ld;
    T* out = dst + r * dst_stride;
    ForEachVector(0, d, [&](int64_t i, int w) { StoreN(LoadN(in + i, w), out + i, w); });
  }
}

// Zeroes [begin, end) of a row.
inline void ZeroRange(float* row, int64_t begin, int64_t end) {
  ForEachVector(begin, end, [&](int64_t i, int w) { StoreN(Vec::Zero(), row + i, w); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
