// Device-side helpers shared by the .cu files: loads and stores that convert between the storage
// types and f32, the host-side dispatch from FloatType to the C++ type, warp and block reductions
// in a fixed order, launch-size helpers and the one way kernels are launched (Launch). Include only
// from .cu files. With KILN_CUDA_EMULATION the same files compile as C++ for the kernel emulation
// (Note [Kernel emulation] in emulation/cuda_emulation.h).
#pragma once

#if defined(KILN_CUDA_EMULATION)
#include "kernels/cuda/emulation/cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda {

__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ float Load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float Load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void Store(__half* p, float v) { *p = __float2half_rn(v); }

// v rounded to T and back (round to nearest even), as the CPU's RoundTo<T>.
template <typename T>
__device__ __forceinline__ float RoundTo(float v) {
  T t;
  Store(&t, v);
  return Load(&t);
}

// Note [Packed 16-byte accesses]
// A memory-bound kernel reaches the device's bandwidth only with enough bytes in flight: by
// Little's law about bandwidth x latency (an H200: ~4.8 TB/s x ~0.7 us, some 3 MB across the
// device, ~25 KB per multiprocessor). A warp of 2-byte scalar loads asks for 64 bytes at a time;
// the same warp loading 16 bytes a lane asks for 512. So the streaming kernels move Pack<T>s —
// 16 bytes, 8 bf16 / f16 or 4 f32 elements, one ld.global.v4 / st.global.v4 — whenever the
// element count per row is a multiple of the pack and the pointers are 16-byte aligned
// (PacksFit), and fall back to elements otherwise. The arithmetic per element is unchanged, so a
// packed and an element-wise run of the same kernel give the same bits.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T e[kSize];
};

// v[k] = p[k] for the kSize elements of the pack at p (16-byte aligned), in f32.
template <typename T>
__device__ __forceinline__ void LoadPack(const T* p, float (&v)[Pack<T>::kSize]) {
  const Pack<T> pack = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
  for (int k = 0; k < Pack<T>::kSize; ++k) v[k] = Load(&pack.e[k]);
}

template <typename T>
__device__ __forceinline__ void StorePack(T* p, const float (&v)[Pack<T>::kSize]) {
  Pack<T> pack;
#pragma unroll
  for (int k = 0; k < Pack<T>::kSize; ++k) Store(&pack.e[k], v[k]);
  *reinterpret_cast<Pack<T>*>(p) = pack;
}

// kV consecutive elements at p in f32, moved in the widest accesses that kV * sizeof(T) bytes
// allow: whole 16-byte packs when it is a multiple of 16, one 8-byte access when it is 8 (4 bf16
// beside a pack of f32), else element by element. p must be aligned to the access (min(16, kV *
// sizeof(T)) bytes). Kernels templated on kV (1, or a pack of their main type) share one body.
template <typename T, int kV>
struct alignas(8) EightBytes {
  static_assert(kV * sizeof(T) == 8);
  T e[kV];
};

template <int kV, typename T>
__device__ __forceinline__ void LoadElements(const T* p, float (&v)[kV]) {
  constexpr int kBytes = kV * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    constexpr int kP = Pack<T>::kSize;
#pragma unroll
    for (int j = 0; j < kV / kP; ++j) {
      float part[kP];
      LoadPack(p + j * kP, part);
#pragma unroll
      for (int k = 0; k < kP; ++k) v[j * kP + k] = part[k];
    }
  } else if constexpr (kBytes == 8) {
    const EightBytes<T, kV> group = *reinterpret_cast<const EightBytes<T, kV>*>(p);
#pragma unroll
    for (int k = 0; k < kV; ++k) v[k] = Load(&group.e[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kV; ++k) v[k] = Load(p + k);
  }
}

template <int kV, typename T>
__device__ __forceinline__ void StoreElements(T* p, const float (&v)[kV]) {
  constexpr int kBytes = kV * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    constexpr int kP = Pack<T>::kSize;
#pragma unroll
    for (int j = 0; j < kV / kP; ++j) {
      float part[kP];
#pragma unroll
      for (int k = 0; k < kP; ++k) part[k] = v[j * kP + k];
      StorePack(p + j * kP, part);
    }
  } else if constexpr (kBytes == 8) {
    EightBytes<T, kV> group;
#pragma unroll
    for (int k = 0; k < kV; ++k) Store(&group.e[k], v[k]);
    *reinterpret_cast<EightBytes<T, kV>*>(p) = group;
  } else {
#pragma unroll
    for (int k = 0; k < kV; ++k) Store(p + k, v[k]);
  }
}

// True when every pointer (null ones ignored) is 16-byte aligned (host side).
inline bool Aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// True when rows of `cols` elements of T at each pointer can be moved in whole packs: cols a
// multiple of the pack and every pointer 16-byte aligned (host side).
template <typename T>
bool PacksFit(int64_t cols, std::initializer_list<const void*> pointers) {
  return cols % Pack<T>::kSize == 0 && Aligned16(pointers);
}

// Calls fn(T{}) with T the storage type of `type` (host side).
template <typename Fn>
void DispatchFloat(FloatType type, Fn&& fn) {
  switch (type) {
    case FloatType::kBF16:
      fn(__nv_bfloat16{});
      return;
    case FloatType::kF16:
      fn(__half{});
      return;
    case FloatType::kF32:
      fn(float{});
      return;
  }
}

inline cudaStream_t AsStream(StreamPtr s) { return static_cast<cudaStream_t>(s); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...), or its run on the kernel emulation.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
#if defined(KILN_CUDA_EMULATION)
  emulation::LaunchGrid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                        static_cast<cudaStream_t>(stream),
                        [kernel, params = std::tuple<Params...>(std::forward<Args>(args)...)] {
                          std::apply(kernel, params);  // the arguments as the kernel takes them
                        });
#else
  // clang-format off
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
}

// Declares `name`, the block's dynamic shared memory (128-byte aligned bytes).
#if defined(KILN_CUDA_EMULATION)
#define KILN_DYNAMIC_SHARED_BYTES(name) \
  unsigned char* name = ::kiln::kernels::cuda::emulation::DynamicShared()
#else
#define KILN_DYNAMIC_SHARED_BYTES(name) extern __shared__ __align__(128) unsigned char name[]
#endif

// Blocks of `threads` covering n elements with a grid-stride loop, capped.
inline unsigned GridFor(int64_t n, int threads, int64_t cap = 8192) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The order is fixed by the thread layout, so results repeat bit for bit.
template <typename T>
__device__ T BlockSum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  T total = lane < warps ? partial[lane] : T(0);
  return WarpSum(total);
}

__device__ inline float BlockMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float m = lane < warps ? partial[lane] : -INFINITY;
  return WarpMax(m);
}

}  // namespace kiln::kernels::cuda
