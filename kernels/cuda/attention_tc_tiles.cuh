// Device and launch helpers shared by the tensor-core attention kernels (attention_tc.cu: wmma;
// attention_mma.cu: mma.sync): the tile copy from packed qkv into shared memory, the dispatch
// over storage type and head dim, and the shared-memory opt-in. Include only from those .cu files.
#pragma once

#include <cstdint>
#include <type_traits>

#if !defined(KILN_CUDA_EMULATION)
#include <cuda_pipeline_primitives.h>
#endif

#include "kernels/cuda/attention_tc_layout.h"
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda::attention_tc {

// The mma.sync kernels keep scores in log2 units (exp2 is the GPU's fast exponential).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Calls fn(r, c) for every 16-byte chunk c of every row r of a (kTile, kD) 16-bit tile, the
// chunks spread over the block's threads.
template <int kD, typename Fn>
__device__ __forceinline__ void ForEachTileChunk(Fn&& fn) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  for (int e = threadIdx.x; e < kTile * kChunks; e += kThreads) fn(e / kChunks, e % kChunks);
}

// tile (kTile, Ld16(kD)) = rows [r0, r0 + kTile) of the head starting at column `col` of a
// (T, stride) matrix in the storage type; rows past seq are zeros. 16 bytes per thread and step
// (base, stride and col keep every row 16-byte aligned: attention_tc::LaunchFits).
template <int kD, typename T>
__device__ void CopyTile(T* tile, const T* base, int64_t stride, int64_t col, int64_t r0,
                         int64_t seq) {
  static_assert(sizeof(T) == 2, "16-bit storage");
  ForEachTileChunk<kD>([&](int r, int c) {
    const int64_t t = r0 + r;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < seq) v = *reinterpret_cast<const uint4*>(base + t * stride + col + c * 8);
    *reinterpret_cast<uint4*>(tile + r * Ld16(kD) + c * 8) = v;
  });
}

// CopyTile with cp.async (the copies land when the thread's __pipeline_wait_prior covers the
// group they were committed in; other threads may read them after a barrier that follows).
template <int kD, typename T>
__device__ void CopyTileAsync(T* tile, const T* base, int64_t stride, int64_t col, int64_t r0,
                              int64_t seq) {
  static_assert(sizeof(T) == 2, "16-bit storage");
  ForEachTileChunk<kD>([&](int r, int c) {
    const int64_t t = r0 + r;
    // Rows past seq: 16 bytes of zero fill, nothing read (the row-0 address stands in).
    const T* src = base + (t < seq ? t : 0) * stride + col + c * 8;
    __pipeline_memcpy_async(tile + r * Ld16(kD) + c * 8, src, 16, t < seq ? 0 : 16);
  });
}

// A key tile and its value tile, rows [k0, k0 + kTile) of the kv head whose columns are k_col and
// v_col, into one stage as cp.async copies: keys at `stage`, values one tile further.
template <int kD, typename T>
__device__ void CopyKeyValueTilesAsync(T* stage, const T* base, int64_t stride, int64_t k_col,
                                       int64_t v_col, int64_t k0, int64_t seq) {
  CopyTileAsync<kD>(stage, base, stride, k_col, k0, seq);
  CopyTileAsync<kD>(stage + kTile * Ld16(kD), base, stride, v_col, k0, seq);
}

// The top of step `step` of a two-stage streaming loop (Note [Prefetched key and value tiles] in
// attention_mma.cu): issues step + 1's copies (prefetch(step + 1), into the other stage, free
// since the previous step's closing barrier) when there is one, then waits for this thread's
// copies of `step` and, with a barrier, for every other thread's.
template <typename Prefetch>
__device__ __forceinline__ void AdvanceStages(int step, int steps, Prefetch&& prefetch) {
  if (step + 1 < steps) {
    prefetch(step + 1);
    __pipeline_commit();
  }
  __pipeline_wait_prior(step + 1 < steps ? 1 : 0);
  __syncthreads();
}

// dst (kTile) = src[r0 + i] of one (b, h) row of a (B, H, T) row statistic (lse, delta), as
// 4-byte cp.async copies; zeros past seq.
__device__ inline void CopyRowStatsAsync(float* dst, const float* src, int64_t r0, int64_t seq) {
  for (int i = threadIdx.x; i < kTile; i += kThreads) {
    const bool real = r0 + i < seq;
    __pipeline_memcpy_async(dst + i, src + (real ? r0 + i : 0), 4, real ? 0 : 4);
  }
}

// Calls fn(T{}, std::integral_constant<int, kD>{}) for a launch the tensor-core kernels take.
template <typename Fn>
void DispatchTensorCore(const AttentionLaunch& a, Fn&& fn) {
  const auto with_dim = [&](auto t) {
    if (a.head_dim == 64) {
      fn(t, std::integral_constant<int, 64>{});
    } else {
      fn(t, std::integral_constant<int, 128>{});
    }
  };
  if (a.type == FloatType::kBF16) {
    with_dim(__nv_bfloat16{});
  } else {
    with_dim(__half{});
  }
}

template <typename Kernel>
void AllowSharedBytes(Kernel* kernel, size_t bytes) {
  KILN_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
}

}  // namespace kiln::kernels::cuda::attention_tc
