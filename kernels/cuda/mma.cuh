// Warp-level tensor-core products with a documented register layout: mma.sync m16n8k16 with 16-bit
// inputs (bf16 / f16) and f32 accumulators (sm_80 and later), for kernels that keep their
// accumulators in registers and work on them by row (attention's online softmax), which wmma's
// opaque fragments do not allow. On the kernel emulation the product is computed from the lanes'
// registers, published to the warp between two warp barriers, following the same layout. See Note
// [mma.sync fragments]. Include only from .cu files.
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

// Fragments from row-major tiles in shared (or global) memory, `ld` elements per row; lane
// coordinates g, t as in Note [mma.sync fragments].
// A (16 x 16) = tile[r0 .. r0 + 16)[c0 .. c0 + 16).
template <typename T>
__device__ __forceinline__ void LoadA(uint32_t (&a)[4], const T* tile, int ld, int r0, int c0) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  const T* p = tile + (r0 + g) * ld + c0 + 2 * t;
  a[0] = LoadPair(p);
  a[1] = LoadPair(p + 8 * ld);
  a[2] = LoadPair(p + 8);
  a[3] = LoadPair(p + 8 * ld + 8);
}

// 2^x in one MUFU.EX2 (ex2.approx.ftz: ~2 ulp; results below 2^-126 flush to 0; 2^-inf = 0), for
// the attention kernels' probabilities, which are rounded to bf16 / f16 anyway. exp2f adds the
// subnormal range's fix-up instructions around the same MUFU. Emulated with exp2f.
__device__ __forceinline__ float FastExp2(float x) {
#if defined(KILN_CUDA_EMULATION)
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// Note [ldmatrix for the B fragments]
// A B fragment gathered with 32-bit shared-memory loads costs 2 loads (B from a tile's rows) or 4
// 16-bit loads and 2 packs (B from a tile's columns, P V) per mma.sync, and the streamed tiles'
// B fragments are all the shared-memory traffic of the attention kernels' inner loops: the issue
// slots went to loads, not to the tensor cores. ldmatrix loads four 8 x 8 matrices of 16-bit
// elements, one 16-byte row per lane address, straight into the fragment layout (.trans: the
// transpose, which is exactly B from a tile's columns): two products' B fragments per
// instruction. Rows must be 16-byte aligned; the (D + 8)-element rows of the attention tiles are
// (2 D + 16) bytes, and an 8-lane phase then reads 8 rows starting 4 banks apart: conflict-free.
// The emulation publishes each lane's row address to its warp and gathers the same elements, so
// the addressing is exercised without a GPU.

// ldmatrix .x kMatrices (2 or 4) [.trans], shared memory: lane 8 m + r passes `row`, the address
// of row r of matrix m (8 T, 16-byte aligned). Register m of lane 4 g + t receives matrix m's
// elements (g, 2t) and (g, 2t + 1), or with kTrans (2t, g) and (2t + 1, g).
template <int kMatrices, bool kTrans, typename T>
__device__ __forceinline__ void LdMatrix(uint32_t (&r)[kMatrices], const T* row) {
  static_assert(kMatrices == 2 || kMatrices == 4, "ldmatrix takes .x2 or .x4 here");
#if defined(KILN_CUDA_EMULATION)
  static thread_local const void* published[32][32];  // [warp][lane] row addresses
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  const void*(&rows)[32] = published[threadIdx.x / 32 % 32];
  rows[lane] = row;
  __syncwarp();
  const auto row_of = [&](int m, int i) { return static_cast<const T*>(rows[8 * m + i]); };
  for (int m = 0; m < kMatrices; ++m) {
    r[m] = kTrans ? LoadSplitPair(row_of(m, 2 * t) + g, row_of(m, 2 * t + 1) + g)
                  : LoadSplitPair(row_of(m, g) + 2 * t, row_of(m, g) + 2 * t + 1);
  }
  __syncwarp();  // every lane has read the addresses before the next call overwrites them
#else
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kMatrices == 2 && !kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(address));
  } else if constexpr (kMatrices == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(address));
  } else if constexpr (!kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#endif
}

// Two B fragments (16 x 8 each) in one ldmatrix.x4 from a shared tile whose rows are B's columns
// (K for Q K^T): b[2 i], b[2 i + 1] is B[k][n] = tile[n0 + n][k0 + 16 i + k], i = 0, 1.
template <typename T>
__device__ __forceinline__ void LoadBRowsX2(uint32_t (&b)[4], const T* tile, int ld, int n0,
                                            int k0) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  LdMatrix<4, false>(b, tile + (n0 + lane % 8) * ld + k0 + 8 * (lane / 8));
}

// Two B fragments (16 x 8 each) in one ldmatrix.x4.trans from a shared tile whose rows are B's
// rows (V for P V): b[2 i], b[2 i + 1] is B[k][n] = tile[k0 + k][n0 + 8 i + n], i = 0, 1.
template <typename T>
__device__ __forceinline__ void LoadBColumnsX2(uint32_t (&b)[4], const T* tile, int ld, int k0,
                                               int n0) {
  const int lane = static_cast<int>(threadIdx.x % 32), m = lane / 8;
  LdMatrix<4, true>(b, tile + (k0 + 8 * (m % 2) + lane % 8) * ld + n0 + 8 * (m / 2));
}

// The A fragment (16 x 16) of two adjacent accumulator tiles (16 x 8 each, columns [0, 8) and
// [8, 16)), rounded to T.
template <typename T>
__device__ __forceinline__ void AccumulatorsToA(uint32_t (&a)[4], const float (&left)[4],
                                                const float (&right)[4]) {
  a[0] = Pack<T>(left[0], left[1]);
  a[1] = Pack<T>(left[2], left[3]);
  a[2] = Pack<T>(right[0], right[1]);
  a[3] = Pack<T>(right[2], right[3]);
}

// Stores an accumulator tile row pair (rows g and g + 8 of a 16 x 8 tile at column c0) as T into a
// row-major matrix, rows below `rows` only: dst points at the tile's row 0, column 0.
template <typename T>
__device__ __forceinline__ void StoreAccumulator(T* dst, int64_t ld, const float (&acc)[4],
                                                 float scale0, float scale1, bool row0_ok,
                                                 bool row1_ok) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  if (row0_ok) {
    *reinterpret_cast<uint32_t*>(dst + g * ld + 2 * t) = Pack<T>(acc[0] * scale0, acc[1] * scale0);
  }
  if (row1_ok) {
    *reinterpret_cast<uint32_t*>(dst + (g + 8) * ld + 2 * t) =
        Pack<T>(acc[2] * scale1, acc[3] * scale1);
  }
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
__device__ __forceinline__ void MmaM16N8K16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
#if defined(KILN_CUDA_EMULATION)
  // Every lane publishes its registers to the warp's slot, then reads rows g and g + 8 of A and
  // columns 2t and 2t + 1 of B from their owners (two warp barriers instead of a shuffle per
  // register: a block's threads share this host thread, and so the static below).
  static thread_local uint32_t published[32][32][6];  // [warp][lane][a0..a3, b0, b1]
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  uint32_t(&warp_regs)[32][6] = published[threadIdx.x / 32 % 32];
  for (int r = 0; r < 4; ++r) warp_regs[lane][r] = a[r];
  warp_regs[lane][4] = b0;
  warp_regs[lane][5] = b1;
  __syncwarp();
  float a_rows[2][16], b_cols[2][16];
  for (int q = 0; q < 4; ++q) {
    for (int r = 0; r < 4; ++r) {  // lane 4g + q's a[r]: row g + 8 (r % 2), cols 2q + 8 (r / 2)
      const uint32_t v = warp_regs[4 * g + q][r];
      const int col = 2 * q + 8 * (r / 2);
      a_rows[r % 2][col] = Half<T>(v, 0);
      a_rows[r % 2][col + 1] = Half<T>(v, 1);
    }
    for (int c = 0; c < 2; ++c) {
      for (int r = 0; r < 2; ++r) {  // lane 4n + q's b[r]: rows 2q + 8r, +1 of column n
        const uint32_t v = warp_regs[4 * (2 * t + c) + q][4 + r];
        b_cols[c][2 * q + 8 * r] = Half<T>(v, 0);
        b_cols[c][2 * q + 8 * r + 1] = Half<T>(v, 1);
      }
    }
  }
  __syncwarp();  // every lane has read the slot before the next product overwrites it
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
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

// acc (16 x 8) += A B over k in [0, 16 kChunks), with A the warp's rows as A fragments (one per
// 16 columns) and B[k][n] = tile[n0 + n][k]: the tile's rows n0 .. n0 + 8 as columns (scores
// against keys, or queries). The tile is in shared memory (Note [ldmatrix for the B fragments]).
template <typename T, int kChunks>
__device__ __forceinline__ void ProductWithRows(float (&acc)[4], const uint32_t (&a)[kChunks][4],
                                                const T* tile, int ld, int n0) {
  static_assert(kChunks % 2 == 0, "chunks go in pairs, one ldmatrix.x4 each");
#pragma unroll
  for (int c = 0; c < kChunks; c += 2) {
    uint32_t b[4];
    LoadBRowsX2(b, tile, ld, n0, 16 * c);
    MmaM16N8K16<T>(acc, a[c], b[0], b[1]);
    MmaM16N8K16<T>(acc, a[c + 1], b[2], b[3]);
  }
}

// acc (16 x 8 kTiles) += A tile[0 .. 16 kChunks)[0 .. 8 kTiles), with A (16 x 16 kChunks) as A
// fragments (P V, dS K, P^T dout, dS^T q); the tile is in shared memory.
template <typename T, int kChunks, int kTiles>
__device__ __forceinline__ void AccumulateProduct(float (&acc)[kTiles][4],
                                                  const uint32_t (&a)[kChunks][4], const T* tile,
                                                  int ld) {
  static_assert(kTiles % 2 == 0, "n-tiles go in pairs, one ldmatrix.x4 each");
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int n = 0; n < kTiles; n += 2) {
      uint32_t b[4];
      LoadBColumnsX2(b, tile, ld, 16 * c, 8 * n);
      MmaM16N8K16<T>(acc[n], a[c], b[0], b[1]);
      MmaM16N8K16<T>(acc[n + 1], a[c], b[2], b[3]);
    }
  }
}

}  // namespace kiln::kernels::cuda::mma
