// The kernel emulation (kernels/cuda/emulation) catches what Note [Kernel emulation] says it
// catches: small kernels with one deliberate bug each — a missing __syncthreads, a missing
// __syncwarp, a divergent barrier, a shuffle in a partial warp, a trap, launch configurations a
// device refuses, misaligned or lane-dependent wmma operands — fail here, and their correct
// versions pass; warp shuffles, barriers and dynamic shared memory behave as on a device. The
// `_emulated` test targets rely on this (tests/kernels/cuda/BUILD.bazel). With deferred streams
// (Note [Deferred streams]), reading a result before waiting for it and ordering two streams
// without an event give wrong values, and a fault in queued work surfaces at the next wait. Stream
// capture records work for replay and refuses what a device graph cannot hold. cp.async copies
// land only when a wait covers them.
#include "tests/testing.h"

#if defined(KILN_NOCUDA_BUILD)

TEST_CASE("the kernel emulation catches kernel bugs", "[emulation]") {
  KILN_SKIP("built with --config=nocuda: the kernel emulation needs the CUDA headers");
}

#else

#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/emulation/streams.h"
#include "kernels/cuda/emulation/wmma.h"

namespace kiln::kernels::cuda {
namespace {

using emulation::ThreadOrder;

constexpr int kBlock = 64;

// out[t] = the value thread t + 1 wrote to shared memory (with or without the barrier between).
__global__ void neighbour_kernel(int* out, bool barrier) {
  __shared__ int values[kBlock];
  const int t = threadIdx.x;
  values[t] = 1000 + t;
  if (barrier) __syncthreads();
  out[t] = values[(t + 1) % kBlock];
  __syncthreads();
  values[t] = -1;  // the next launch starts from stale values
}

std::vector<int> RunNeighbour(bool barrier, ThreadOrder order) {
  emulation::SetThreadOrder(order);
  std::vector<int> out(kBlock, 0);
  Launch(neighbour_kernel, 1, kBlock, 0, nullptr, out.data(), barrier);
  emulation::SetThreadOrder(ThreadOrder::kAlternate);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  return out;
}

std::vector<int> Expected() {
  std::vector<int> want(kBlock);
  for (int t = 0; t < kBlock; ++t) want[t] = 1000 + (t + 1) % kBlock;
  return want;
}

// The failure the last launch recorded; clears it.
std::string TakeFailure() {
  const std::string failure = emulation::LastFailure();
  emulation::ClearFailure();
  return failure;
}

TEST_CASE("a missing __syncthreads shows up in one of the thread orders", "[emulation]") {
  for (ThreadOrder order : {ThreadOrder::kForward, ThreadOrder::kReverse}) {
    CHECK(RunNeighbour(true, order) == Expected());
  }
  const bool forward_ok = RunNeighbour(false, ThreadOrder::kForward) == Expected();
  const bool reverse_ok = RunNeighbour(false, ThreadOrder::kReverse) == Expected();
  CHECK_FALSE((forward_ok && reverse_ok));
}

// Thread t copies in[t] to shared memory with cp.async (zero-filled when t is odd and zero_fill),
// waits (or not) for its group, and, after a barrier, reads its neighbour's copy.
__global__ void async_copy_kernel(const int* in, int* out, bool wait, bool zero_fill) {
  __shared__ int staged[kBlock];
  const int t = threadIdx.x;
  staged[t] = -1;
  __syncthreads();
  __pipeline_memcpy_async(&staged[t], &in[t], sizeof(int), zero_fill && t % 2 == 1 ? 4 : 0);
  __pipeline_commit();
  if (wait) __pipeline_wait_prior(0);
  __syncthreads();
  out[t] = staged[(t + 1) % kBlock];
}

TEST_CASE("cp.async lands at the wait: a missing wait reads stale shared memory", "[emulation]") {
  std::vector<int> in(kBlock), out(kBlock, 0), want(kBlock), want_filled(kBlock);
  for (int t = 0; t < kBlock; ++t) in[t] = 500 + t;
  for (int t = 0; t < kBlock; ++t) want[t] = in[(t + 1) % kBlock];
  for (int t = 0; t < kBlock; ++t) want_filled[t] = (t + 1) % kBlock % 2 == 1 ? 0 : want[t];
  Launch(async_copy_kernel, 1, kBlock, 0, nullptr, in.data(), out.data(), true, false);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out == want);
  Launch(async_copy_kernel, 1, kBlock, 0, nullptr, in.data(), out.data(), true, true);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out == want_filled);
  Launch(async_copy_kernel, 1, kBlock, 0, nullptr, in.data(), out.data(), false, false);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out == std::vector<int>(kBlock, -1));  // nothing landed
}

// Lane l writes slot l, then reads slot (l + 1) % 32 of its warp, with or without __syncwarp.
__global__ void warp_neighbour_kernel(int* out, bool sync) {
  __shared__ int values[kBlock];
  const int t = threadIdx.x, lane = t % 32, base = t - lane;
  values[t] = 7 * t;
  if (sync) __syncwarp();
  out[t] = values[base + (lane + 1) % 32];
  __syncwarp();
  values[t] = -1;
}

TEST_CASE("a missing __syncwarp shows up in one of the thread orders", "[emulation]") {
  std::vector<int> want(kBlock);
  for (int t = 0; t < kBlock; ++t) want[t] = 7 * (t - t % 32 + (t % 32 + 1) % 32);
  bool missing_caught = false;
  for (ThreadOrder order : {ThreadOrder::kForward, ThreadOrder::kReverse}) {
    emulation::SetThreadOrder(order);
    std::vector<int> with(kBlock), without(kBlock);
    Launch(warp_neighbour_kernel, 1, kBlock, 0, nullptr, with.data(), true);
    Launch(warp_neighbour_kernel, 1, kBlock, 0, nullptr, without.data(), false);
    CHECK(with == want);
    missing_caught = missing_caught || without != want;
  }
  emulation::SetThreadOrder(ThreadOrder::kAlternate);
  CHECK(missing_caught);
  CHECK(cudaGetLastError() == cudaSuccess);
}

// Threads below `reach` wait at __syncthreads; the others have returned.
__global__ void divergent_barrier_kernel(int reach) {
  if (static_cast<int>(threadIdx.x) >= reach) return;
  __syncthreads();
}

TEST_CASE("a barrier not every thread reaches fails the launch", "[emulation]") {
  Launch(divergent_barrier_kernel, 1, kBlock, 0, nullptr, kBlock);
  CHECK(cudaGetLastError() == cudaSuccess);
  Launch(divergent_barrier_kernel, 1, kBlock, 0, nullptr, 16);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);  // sticky, as a device fault is
  CHECK(TakeFailure().find("__syncthreads reached by 16 of 64 threads") != std::string::npos);
  CHECK(cudaGetLastError() == cudaSuccess);
}

// out[t] = the sum over the warp (butterfly) and lane 3's value broadcast.
__global__ void shuffle_kernel(int* sum, int* broadcast) {
  const int t = threadIdx.x;
  sum[t] = WarpSum(t);
  broadcast[t] = __shfl_sync(0xffffffffu, 100 + t, 3);
}

TEST_CASE("warp shuffles exchange values as on a device, in full warps only", "[emulation]") {
  std::vector<int> sum(kBlock), broadcast(kBlock);
  Launch(shuffle_kernel, 1, kBlock, 0, nullptr, sum.data(), broadcast.data());
  REQUIRE(cudaGetLastError() == cudaSuccess);
  for (int t = 0; t < kBlock; ++t) {
    const int base = t - t % 32;
    CHECK(sum[t] == 32 * base + 31 * 32 / 2);
    CHECK(broadcast[t] == 100 + base + 3);
  }
  Launch(shuffle_kernel, 1, 48, 0, nullptr, sum.data(), broadcast.data());  // a partial warp
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(TakeFailure().find("partial warp") != std::string::npos);
}

__global__ void trap_kernel(int* out, int bad) {
  out[threadIdx.x] = 1;
  if (static_cast<int>(threadIdx.x) == bad) __trap();
}

TEST_CASE("__trap fails the launch and later launches until cleared", "[emulation]") {
  std::vector<int> out(kBlock, 0);
  Launch(trap_kernel, 2, 32, 0, nullptr, out.data(), 5);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  std::fill(out.begin(), out.end(), 0);
  Launch(trap_kernel, 1, 32, 0, nullptr, out.data(), -1);  // skipped: the context is broken
  CHECK(out[0] == 0);
  CHECK(TakeFailure().find("__trap()") != std::string::npos);
  Launch(trap_kernel, 1, 32, 0, nullptr, out.data(), -1);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out[0] == 1);
}

// out[0] = whether every byte of the dynamic shared memory started as 0xff.
__global__ void dynamic_shared_kernel(int* out, int bytes) {
  KILN_DYNAMIC_SHARED_BYTES(smem);
  if (threadIdx.x != 0) return;
  int poisoned = 1;
  for (int i = 0; i < bytes; ++i) poisoned &= smem[i] == 0xff;
  out[0] = poisoned;
  std::memset(smem, 0, bytes);
}

TEST_CASE("launch configurations a device refuses are refused", "[emulation]") {
  int out = 0;
  Launch(dynamic_shared_kernel, 1, 32, 1024, nullptr, &out, 1024);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out == 1);  // and again in the next block: every block starts poisoned
  Launch(dynamic_shared_kernel, 0, 32, 0, nullptr, &out, 0);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  Launch(dynamic_shared_kernel, 1, 1025, 0, nullptr, &out, 0);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  Launch(dynamic_shared_kernel, dim3(1, 65536), 32, 0, nullptr, &out, 0);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  const int big = 64 << 10;
  Launch(dynamic_shared_kernel, 1, 32, big, nullptr, &out, big);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(emulation::LastFailure().find("cudaFuncSetAttribute") != std::string::npos);
  const void* kernel = reinterpret_cast<const void*>(&dynamic_shared_kernel);
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10) ==
        cudaErrorInvalidValue);                        // over the opt-in limit
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);  // and, as on a device, the last error
  REQUIRE(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, big) ==
          cudaSuccess);
  out = 0;
  Launch(dynamic_shared_kernel, 1, 32, big, nullptr, &out, big);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out == 1);
  emulation::ClearFailure();
}

namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// c (16, 16) = a (16, 16) b (16, 16) from shared copies at byte offset `shift`; with
// `lane_dependent`, lane 5 multiplies a different b (a bug on a device).
__global__ void wmma_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* c, int shift,
                            bool lane_dependent) {
  alignas(128) __shared__ unsigned char tiles[2 * 16 * 16 * 2 + 64];
  __nv_bfloat16* as = reinterpret_cast<__nv_bfloat16*>(tiles + shift);
  __nv_bfloat16* bs = as + 256;
  for (int i = threadIdx.x; i < 256; i += 32) {
    as[i] = a[i];
    bs[i] = b[i];
  }
  __syncwarp();
  FragA fa;
  FragB fb;
  FragC fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, as, 16);
  wmma::load_matrix_sync(fb, lane_dependent && threadIdx.x == 5 ? as : bs, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

TEST_CASE("wmma on the emulation multiplies, and refuses misaligned or lane-dependent operands",
          "[emulation]") {
  std::vector<__nv_bfloat16> a(256), b(256);
  for (int i = 0; i < 256; ++i) {
    a[i] = __float2bfloat16_rn(static_cast<float>(i % 7) - 3.0f);
    b[i] = __float2bfloat16_rn(static_cast<float>(i % 5) * 0.5f);
  }
  alignas(32) float c[256];
  Launch(wmma_kernel, 1, 32, 0, nullptr, a.data(), b.data(), c, 0, false);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      float want = 0;
      for (int k = 0; k < 16; ++k) {
        want += __bfloat162float(a[i * 16 + k]) * __bfloat162float(b[k * 16 + j]);
      }
      CHECK(c[i * 16 + j] == want);
    }
  }
  Launch(wmma_kernel, 1, 32, 0, nullptr, a.data(), b.data(), c, 16, false);  // 16-byte aligned
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(TakeFailure().find("256-bit aligned") != std::string::npos);
  Launch(wmma_kernel, 1, 32, 0, nullptr, a.data(), b.data(), c, 0, true);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(TakeFailure().find("differ across the lanes") != std::string::npos);
}

__global__ void fill_kernel(int* out, int value) { out[threadIdx.x] = value; }

// Deferred streams for the scope of a test case, and back to the default.
struct DeferredScope {
  DeferredScope() { emulation::SetDeferredStreams(true); }
  ~DeferredScope() { emulation::SetDeferredStreams(false); }
};

TEST_CASE("deferred streams: a result read before its wait is stale", "[emulation]") {
  DeferredScope deferred;
  cudaStream_t s;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* device = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&device), kBlock * sizeof(int)) == cudaSuccess);
  std::vector<int> host(kBlock, 0);
  Launch(fill_kernel, 1, kBlock, 0, s, device, 7);
  REQUIRE(cudaMemcpyAsync(host.data(), device, kBlock * sizeof(int), cudaMemcpyDeviceToHost, s) ==
          cudaSuccess);
  CHECK(host[0] == 0);  // not yet: the bug a missing wait is on a GPU
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 7));
  REQUIRE(cudaFree(device) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

TEST_CASE("deferred streams: two streams are ordered by events only", "[emulation]") {
  DeferredScope deferred;
  cudaStream_t a, b;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  cudaEvent_t written;
  REQUIRE(cudaEventCreateWithFlags(&written, cudaEventDisableTiming) == cudaSuccess);
  int* device = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&device), kBlock * sizeof(int)) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(device, 0, kBlock * sizeof(int), a) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(a) == cudaSuccess);
  std::vector<int> host(kBlock, -1);
  // Without an event, b's copy does not see a's kernel.
  Launch(fill_kernel, 1, kBlock, 0, a, device, 9);
  REQUIRE(cudaMemcpyAsync(host.data(), device, kBlock * sizeof(int), cudaMemcpyDeviceToHost, b) ==
          cudaSuccess);
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 0));
  // With one, it does; the event marks a's work as it was when recorded.
  Launch(fill_kernel, 1, kBlock, 0, a, device, 11);
  REQUIRE(cudaEventRecord(written, a) == cudaSuccess);
  Launch(fill_kernel, 1, kBlock, 0, a, device, 12);  // after the event: b need not see it
  REQUIRE(cudaStreamWaitEvent(b, written, 0) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(host.data(), device, kBlock * sizeof(int), cudaMemcpyDeviceToHost, b) ==
          cudaSuccess);
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 11));
  REQUIRE(cudaEventQuery(written) == cudaSuccess);
  REQUIRE(cudaFree(device) == cudaSuccess);  // waits for a's last kernel
  REQUIRE(cudaEventDestroy(written) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(a) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(b) == cudaSuccess);
}

TEST_CASE("deferred streams: a fault in queued work surfaces at the next wait", "[emulation]") {
  DeferredScope deferred;
  cudaStream_t s;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* device = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&device), kBlock * sizeof(int)) == cudaSuccess);
  Launch(trap_kernel, 1, 32, 0, s, device, 3);
  CHECK(cudaGetLastError() == cudaSuccess);  // launched; it has not run
  CHECK(cudaStreamSynchronize(s) == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(TakeFailure().find("__trap()") != std::string::npos);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  REQUIRE(cudaFree(device) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

TEST_CASE("a captured graph replays its work; a capture with an allocation is refused",
          "[emulation]") {
  cudaStream_t s;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* device = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&device), kBlock * sizeof(int)) == cudaSuccess);
  std::vector<int> host(kBlock, 0);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  Launch(fill_kernel, 1, kBlock, 0, s, device, 5);
  REQUIRE(cudaMemcpyAsync(host.data(), device, kBlock * sizeof(int), cudaMemcpyDeviceToHost, s) ==
          cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(host[0] == 0);  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 5));
  std::fill(host.begin(), host.end(), 0);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);  // the same work again
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 5));
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  // An allocation cannot be recorded: it fails, and so does the capture; nothing recorded runs.
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  Launch(fill_kernel, 1, kBlock, 0, s, device, 6);
  void* more = nullptr;
  CHECK(cudaMalloc(&more, 64) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(graph == nullptr);
  REQUIRE(cudaMemcpyAsync(host.data(), device, kBlock * sizeof(int), cudaMemcpyDeviceToHost, s) ==
          cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(host == std::vector<int>(kBlock, 5));
  REQUIRE(cudaFree(device) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

}  // namespace
}  // namespace kiln::kernels::cuda

#endif  // KILN_NOCUDA_BUILD
