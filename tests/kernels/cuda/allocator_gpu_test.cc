// [gpu] The caching allocator on a real device: a randomized alloc/free workload over two streams
// (the compute stream and one more) with recorded cross-stream uses, data written and read back
// through every live block to catch overlaps, invariants checked throughout, and the cache
// actually reused; and the cross-stream hazard itself, held open deterministically by a gated
// side stream.
#if !KILN_EXPECT_NOCUDA
#include <cuda_runtime_api.h>
#endif

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "engine/core/allocator.h"
#include "kernels/cuda/cuda_context.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kiln::testing {
namespace {

TEST_CASE("the caching allocator survives a randomized workload on the device", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  const Device dev = Device::CUDA(0);
  DeviceRuntime& rt = RuntimeFor(dev);
  kernels::cuda::CachingAllocator* cache = kernels::cuda::DeviceCachingAllocator(0);
  REQUIRE(cache != nullptr);
  void* const compute = rt.ComputeStream(dev);
  void* const side = rt.CreateStream(dev);
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> log_size(0.0, std::log2(64.0 * (1 << 20)));
  struct Live {
    size_t bytes;
    uint8_t tag;
  };
  std::map<char*, Live> live;
  const auto before = cache->Stats();
  for (int op = 0; op < 3000; ++op) {
    if (rng() % 2 == 0 || live.empty()) {
      const size_t bytes = static_cast<size_t>(std::exp2(log_size(rng)));
      char* p = static_cast<char*>(cache->Allocate(bytes, compute));
      REQUIRE(p != nullptr);
      const uint8_t tag = static_cast<uint8_t>(rng());
      rt.Memset(p, tag, bytes, dev);  // ordered on the compute stream
      live[p] = {bytes, tag};
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      // Read back the first and last byte: a block shared with another live block would differ.
      uint8_t first = 0, last = 0;
      rt.Copy(&first, it->first, 1, dev);
      rt.Copy(&last, it->first + it->second.bytes - 1, 1, dev);
      REQUIRE(first == it->second.tag);
      REQUIRE(last == it->second.tag);
      // Bookkeeping only: the side stream records a use but runs nothing, so this part cannot
      // catch a block reused too early; the next test case does, deterministically.
      if (rng() % 4 == 0) cache->RecordStream(it->first, side);
      cache->Free(it->first);
      live.erase(it);
    }
    if (op % 100 == 0) REQUIRE(cache->CheckInvariants().empty());
  }
  for (const auto& [p, l] : live) cache->Free(p);
  rt.Synchronize(dev);
  const auto s = cache->Stats();
  REQUIRE(cache->CheckInvariants().empty());
  REQUIRE(s.allocated_bytes == before.allocated_bytes);
  // The cache did its job: far fewer cudaMallocs than allocations.
  REQUIRE(s.num_device_mallocs - before.num_device_mallocs <
          (s.num_allocs - before.num_allocs) / 4);
  cache->EmptyCache();
  rt.DestroyStream(dev, side);
}

#if !KILN_EXPECT_NOCUDA
// Holds a stream until the test opens the gate: a host function enqueued on it that spins on the
// flag (30 s at most, so a broken test fails rather than hangs). It makes no CUDA call.
void CUDART_CB WaitForGate(void* gate) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!static_cast<std::atomic<bool>*>(gate)->load() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}
#endif

// The real cross-stream hazard, made deterministic: the side stream's write into a block is held
// back behind a gate while the block is freed and a block of the same size is requested on the
// compute stream. The allocator must not hand out the freed block until the side stream has
// passed its write; if it did, the compute stream's bytes would be overwritten when the gate
// opens.
TEST_CASE("a block still written by another stream is not reused before that write",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
#if KILN_EXPECT_NOCUDA
  KILN_SKIP("built without CUDA");
#else
  const Device dev = Device::CUDA(0);
  DeviceRuntime& rt = RuntimeFor(dev);
  kernels::cuda::CachingAllocator* cache = kernels::cuda::DeviceCachingAllocator(0);
  REQUIRE(cache != nullptr);
  void* const compute = rt.ComputeStream(dev);
  void* const side = rt.CreateStream(dev);
  const size_t bytes = size_t{4} << 20;  // large pool: its 20 MiB segment leaves room for a second
  char* p = static_cast<char*>(cache->Allocate(bytes, compute));
  REQUIRE(p != nullptr);
  rt.Memset(p, 0x11, bytes, dev);  // compute stream
  void* e = rt.CreateEvent(dev);
  rt.RecordEvent(dev, e, compute);
  rt.StreamWaitEvent(dev, side, e);  // the side stream's work comes after the compute's memset
  std::atomic<bool> gate{false};
  REQUIRE(cudaLaunchHostFunc(static_cast<cudaStream_t>(side), WaitForGate, &gate) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(p, 0x22, bytes, static_cast<cudaStream_t>(side)) == cudaSuccess);
  cache->RecordStream(p, side);
  cache->Free(p);
  REQUIRE(cache->Stats().pending_event_blocks == 1);  // the side stream is held: still in use
  char* q = static_cast<char*>(cache->Allocate(bytes, compute));
  REQUIRE(q != nullptr);
  const bool disjoint = q + bytes <= p || p + bytes <= q;
  REQUIRE(disjoint);
  rt.Memset(q, 0x33, bytes, dev);
  gate = true;
  rt.Synchronize(dev);
  uint8_t first = 0, last = 0;
  rt.Copy(&first, q, 1, dev);
  rt.Copy(&last, q + bytes - 1, 1, dev);
  REQUIRE(first == 0x33);
  REQUIRE(last == 0x33);
  // Once the side stream is done the block goes back to the pool (at the next allocator call).
  cache->Free(q);
  void* again = cache->Allocate(512, compute);
  REQUIRE(cache->Stats().pending_event_blocks == 0);
  cache->Free(again);
  REQUIRE(cache->CheckInvariants().empty());
  rt.DestroyEvent(dev, e);
  rt.DestroyStream(dev, side);
#endif
}

TEST_CASE("tensors on the device round-trip through every copy path", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  const Tensor host = RandomTensor({7, 9, 11}, DType::kF32, 1);
  const Tensor dev = ToCuda(host);
  REQUIRE(dev.ToFloats() == host.ToFloats());
  // Strided device views, dtype conversion across devices, Fill and Clone on the device.
  const Tensor tr = dev.Transpose(0, 2);
  REQUIRE(tr.ToFloats() == host.Transpose(0, 2).ToFloats());
  const Tensor bf = Tensor::Zeros({7, 9, 11}, DType::kBF16, Device::CUDA(0));
  bf.CopyFrom(host);
  REQUIRE(bf.ToFloats() == host.To(DType::kBF16).ToFloats());
  const Tensor slice = dev.Slice(1, 2, 5);
  slice.Fill(3.0f);
  REQUIRE(dev.Slice(1, 2, 5).ToFloats() == std::vector<float>(7 * 3 * 11, 3.0f));
  REQUIRE(dev.Slice(1, 0, 2).ToFloats() == host.Slice(1, 0, 2).ToFloats());
  REQUIRE(dev.Clone().device().is_cuda());
  REQUIRE(GetPinnedHostAllocator()->name() == "cuda-pinned-host");
}

}  // namespace
}  // namespace kiln::testing
