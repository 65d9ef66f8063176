// A host emulation of the CUDA execution model, so that the .cu files compile with the C++
// toolchain (KILN_CUDA_EMULATION, see device_util.cuh) and their kernels run on the CPU in tests
// on machines without a GPU. It is a test bed for kernel logic, not a GPU: it checks what can be
// checked on a CPU and nothing else. See Note [Kernel emulation].
#pragma once

#if !defined(KILN_CUDA_EMULATION)
#error "cuda_emulation.h is for the emulated build of the .cu files only"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

// Note [Kernel emulation]
// Every block runs on one OS thread, its CUDA threads as fibers (Note [Fiber switch] in
// emulator.cc) that switch only at synchronization points: __syncthreads, __syncwarp and the warp
// shuffles. Between two such points a fiber runs alone from start to end, forward or in reverse
// thread order (ThreadOrder; by default every other block, flipping with every launch). A kernel
// that reads shared or global memory another thread writes without a barrier in between gets
// different results in the two orders, so a test comparing them with a reference (the CPU
// kernels) catches missing barriers. wmma stores are split across the lanes (wmma.h) so that a
// missing __syncwarp after one is caught the same way; wmma loads are warp-collective (the first
// lane to reach one reads memory for the warp), as a converged warp loads at one instant.
// What the emulator reports, as a launch failure (LastFailure) that the next cudaGetLastError
// returns, like a faulting kernel on a device: a barrier that not every thread of the block (or
// warp) reaches — divergence, or threads that exited before others wait (a hang or undefined
// behaviour on a GPU); a warp shuffle or __syncwarp in a warp that is not full; __trap; launch
// configurations a device refuses (an empty grid, grid.y / grid.z over 65535, more than 1024
// threads per block, dynamic shared memory over 48 KiB without cudaFuncSetAttribute, or over the
// opt-in limit); wmma pointers that are not 32-byte aligned and leading dimensions that are not a
// multiple of 16 bytes. Dynamic shared memory starts every block filled with 0xff bytes (NaN in
// every float type), so a read of shared memory nothing wrote shows up in the results. Global
// memory is host memory: under AddressSanitizer (the emulation tests are built with it) every
// out-of-bounds access of a kernel is reported with its stack.
// Around the kernels, the CUDA runtime, cuBLASLt and NCCL calls are answered on the host
// (host_runtime.cc, cublaslt.cc, nccl.cc): several emulated devices (KILN_EMULATED_DEVICES) with
// NCCL ranks on threads, collectives as rendezvous, and buffers checked to be on the
// communicator's device. Streams run their work at once, or (the [gpu] tests' emulated twins)
// queued until something waits for it, which exposes missing waits and events between streams
// (Note [Deferred streams] in streams.h).
// What it cannot see: timing, the memory model beyond barriers, bank conflicts, register and
// static shared-memory limits, __launch_bounds__, and the tensor cores' exact rounding (products
// are summed in f32 here). Passing here is necessary, not sufficient: the [gpu] tests stay the
// word on a device.

namespace kiln::kernels::cuda::emulation {

// The order in which the fibers of a block run between synchronization points: kAlternate (the
// default) runs every other block in reverse, and flips with every launch, so a grid of two or
// more blocks, and a one-block kernel launched twice, run in both orders.
enum class ThreadOrder { kAlternate, kForward, kReverse };
void SetThreadOrder(ThreadOrder order);  // for the calling host thread

// Runs `body` as every thread of every block of the grid (blocks one after another), on `stream`
// (at once, or queued: Note [Deferred streams] in streams.h; `body` holds copies of the kernel's
// arguments). A refused configuration or a failure inside a block is recorded (LastFailure) and
// returned by the next cudaGetLastError; the remaining blocks do not run.
void LaunchGrid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                cudaStream_t stream, std::function<void()> body);

// The description of the most recent launch failure, "" when none happened since ClearFailure.
std::string LastFailure();
void ClearFailure();

// Fails the running launch with `what` (from inside a kernel: the calling fiber never resumes).
[[noreturn]] void Fail(const std::string& what);

// The built-in variables of the calling fiber.
const uint3& ThreadIndex();
const uint3& BlockIndex();
const dim3& BlockDim();
const dim3& GridDim();

// The calling block's dynamic shared memory.
unsigned char* DynamicShared();

// cp.async on the calling fiber (Note [Emulated asynchronous copies] in emulator.cc).
void AsyncCopy(void* dst, const void* src, size_t bytes, size_t zero_fill);
void AsyncCommit();
void AsyncWaitPrior(size_t groups);

void SyncThreads();
void SyncWarp(unsigned mask);
// Every lane of the warp deposits `bits` and gets lane `source`'s (a warp shuffle).
uint64_t ExchangeInWarp(unsigned mask, uint64_t bits, int source_lane);
int LaneId();

// Warp-uniform work done once per warp (Note [Warp-uniform work]): the calling lane's next slot
// of its warp's memo, counted since the warp's last barrier. `*fresh` is true for the first lane
// to reach the slot (which fills it); later lanes find what it left.
std::vector<float>& WarpMemo(bool* fresh);

template <typename T>
T Shuffle(unsigned mask, T value, int source_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle type");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ExchangeInWarp(mask, bits, source_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace kiln::kernels::cuda::emulation

// ---- the CUDA C++ surface the .cu files use, on the emulator ----
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __align__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One block runs at a time per host thread, and every fiber of it runs on that thread: a
// thread_local static is the block's shared memory. (A plain static would be one object for the
// whole process: ranks on threads, each emulating kernels on its own device, would share it.)
#define __shared__ static thread_local
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

#define threadIdx (::kiln::kernels::cuda::emulation::ThreadIndex())
#define blockIdx (::kiln::kernels::cuda::emulation::BlockIndex())
#define blockDim (::kiln::kernels::cuda::emulation::BlockDim())
#define gridDim (::kiln::kernels::cuda::emulation::GridDim())

inline void __syncthreads() { ::kiln::kernels::cuda::emulation::SyncThreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::kiln::kernels::cuda::emulation::SyncWarp(mask);
}
template <typename T>
T __shfl_sync(unsigned mask, T value, int source_lane) {
  return ::kiln::kernels::cuda::emulation::Shuffle(mask, value, source_lane & 31);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  return ::kiln::kernels::cuda::emulation::Shuffle(
      mask, value, ::kiln::kernels::cuda::emulation::LaneId() ^ (lane_mask & 31));
}
// cuda_pipeline_primitives.h
inline void __pipeline_memcpy_async(void* dst_shared, const void* src_global, size_t size_and_align,
                                    size_t zfill = 0) {
  ::kiln::kernels::cuda::emulation::AsyncCopy(dst_shared, src_global, size_and_align, zfill);
}
inline void __pipeline_commit() { ::kiln::kernels::cuda::emulation::AsyncCommit(); }
inline void __pipeline_wait_prior(size_t prior) {
  ::kiln::kernels::cuda::emulation::AsyncWaitPrior(prior);
}
[[noreturn]] inline void __trap() { ::kiln::kernels::cuda::emulation::Fail("__trap()"); }

// Device math that the host spells in std::.
using std::isfinite;
using std::isinf;
using std::isnan;
