// Warp-level tensor-core products with a documented register layout: mma.sync m16n8k16 with 16-bit
// inputs (bf16 / f16) and f32 accumulators (sm_80 and later), for kernels that keep their
// accumulators in registers and work on them by row (attention's online softmax), which wmma's
// opaque fragments do not allow. On the kernel emulation the product is computed from the lanes'
// registers gathered with warp shuffles, following the same layout. See Note [mma.sync fragments].
// Include only from .cu files.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda::mma {

// Note [mma.sync fragments]
// D (16x8) += A (16x16) B (16x8) for one warp; lane = 4 g + t (g = lane / 4 in 0..7, t = lane % 4).
// Each 32-bit register holds two 16-bit elements, the lower-indexed one in the low half:
//   A (row-major, 4 registers): a[0] = A[g][2t, 2t+1],     a[1] = A[g+8][2t, 2t+1],
//                               a[2] = A[g][2t+8, 2t+9],   a[3] = A[g+8][2t+8, 2t+9]
//   B (k x n, 2 registers):     b[0] = B[2t, 2t+1][g],     b[1] = B[2t+8, 2t+9][g]
//   C / D (f32, 4 floats):      d[0], d[1] = D[g][2t, 2t+1],  d[2], d[3] = D[g+8][2t, 2t+1]
// (PTX ISA, "Matrix fragments for mma.m16n8k16"). The accumulator layout of two adjacent n-tiles
// is the A layout of one 16-wide k-chunk: a product's D can feed the next product's A without
// leaving registers (scores -> probabilities -> P V).
constexpr unsigned kFullMask = 0xffffffffu;

// Two floats rounded to T and packed, lo in the low half.
template <typename T>
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  T pair[2];
  Store(&pair[0], lo);
  Store(&pair[1], hi);
  uint32_t bits;
  memcpy(&bits, pair, sizeof(bits));
  return bits;
}

// Two T at consecutive addresses (4-byte aligned), as one register.
template <typename T>
__device__ __forceinline__ uint32_t LoadPair(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Two T from separate addresses, packed (lo from `lo`).
template <typename T>
__device__ __forceinline__ uint32_t LoadSplitPair(const T* lo, const T* hi) {
  T pair[2] = {*lo, *hi};
  uint32_t bits;
  memcpy(&bits, pair, sizeof(bits));
  return bits;
}

#if defined(KILN_CUDA_EMULATION)
template <typename T>
inline float Half(uint32_t bits, int which) {
  T pair[2];
  std::memcpy(static_cast<void*>(pair), &bits, sizeof(bits));
  return Load(&pair[which]);
}
#endif

// d += A B, T = __nv_bfloat16 or __half (Note [mma.sync fragments]). Every lane of the warp calls
// it together.
template <typename T>
__device__ __forceinline__ void MmaM16N8K16(float (&d)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
#if defined(KILN_CUDA_EMULATION)
  // Rows g and g + 8 of A and columns 2t and 2t + 1 of B, gathered from their owners.
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  float a_rows[2][16], b_cols[2][16];
  for (int q = 0; q < 4; ++q) {
    for (int r = 0; r < 4; ++r) {  // lane 4g + q's a[r]: row g + 8 (r % 2), cols 2q + 8 (r / 2)
      const uint32_t v = __shfl_sync(kFullMask, a[r], 4 * g + q);
      const int col = 2 * q + 8 * (r / 2);
      a_rows[r % 2][col] = Half<T>(v, 0);
      a_rows[r % 2][col + 1] = Half<T>(v, 1);
    }
    for (int c = 0; c < 2; ++c) {
      for (int r = 0; r < 2; ++r) {  // lane 4n + q's b[r]: rows 2q + 8r, +1 of column n
        const uint32_t v = __shfl_sync(kFullMask, b[r], 4 * (2 * t + c) + q);
        b_cols[c][2 * q + 8 * r] = Half<T>(v, 0);
        b_cols[c][2 * q + 8 * r + 1] = Half<T>(v, 1);
      }
    }
  }
  for (int i = 0; i < 2; ++i) {
    for (int c = 0; c < 2; ++c) {
      float sum = d[2 * i + c];
      for (int k = 0; k < 16; ++k) sum += a_rows[i][k] * b_cols[c][k];
      d[2 * i + c] = sum;
    }
  }
#else
  if constexpr (sizeof(T) == 2 && std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

}  // namespace kiln::kernels::cuda::mma
