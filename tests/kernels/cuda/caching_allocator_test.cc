// Host tests of the CUDA caching allocator's bookkeeping against a fake device (no GPU needed):
// rounding and pool selection, splitting and coalescing, best fit, per-stream reuse and events,
// the free-cache-and-retry path before out of memory, and a randomized alloc/free/stream workload
// checked against the structural invariants after every step.
#include "kernels/cuda/caching_allocator.h"

#include <cmath>
#include <iterator>
#include <map>
#include <random>
#include <vector>

#include "tests/kernels/cuda/fake_device_memory.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using kernels::cuda::CachingAllocator;
constexpr size_t kMiB = size_t{1} << 20;

void* const kStreamA = reinterpret_cast<void*>(0x10);
void* const kStreamB = reinterpret_cast<void*>(0x20);

void RequireInvariants(const CachingAllocator& a) {
  const std::string problem = a.CheckInvariants();
  INFO(problem);
  REQUIRE(problem.empty());
}

TEST_CASE("requests are rounded and served from the small or the large pool", "[allocator]") {
  REQUIRE(CachingAllocator::RoundSize(1) == 512);
  REQUIRE(CachingAllocator::RoundSize(513) == 1024);
  REQUIRE(CachingAllocator::SegmentSize(512) == 2 * kMiB);
  REQUIRE(CachingAllocator::SegmentSize(kMiB) == 2 * kMiB);
  REQUIRE(CachingAllocator::SegmentSize(kMiB + 512) == 20 * kMiB);
  REQUIRE(CachingAllocator::SegmentSize(12 * kMiB + 1) == 14 * kMiB);
  FakeDeviceMemory device(size_t{1} << 32);
  CachingAllocator a(&device);
  void* small = a.Allocate(100, kStreamA);
  REQUIRE(a.Stats().reserved_bytes == static_cast<int64_t>(2 * kMiB));
  REQUIRE(a.Stats().allocated_bytes == 512);
  REQUIRE(a.Stats().requested_bytes == 100);
  void* large = a.Allocate(3 * kMiB, kStreamA);
  REQUIRE(a.Stats().reserved_bytes == static_cast<int64_t>(22 * kMiB));
  void* mid = a.Allocate(12 * kMiB, kStreamA);  // from the 17 MiB rest of the 20 MiB segment
  REQUIRE(a.Stats().reserved_bytes == static_cast<int64_t>(22 * kMiB));
  REQUIRE(static_cast<char*>(mid) == static_cast<char*>(large) + 3 * kMiB);
  void* huge = a.Allocate(30 * kMiB + 1, kStreamA);  // its own segment, rounded to 2 MiB
  REQUIRE(a.Stats().reserved_bytes == static_cast<int64_t>(54 * kMiB));
  REQUIRE(device.mallocs == 3);
  RequireInvariants(a);
  for (void* p : {small, large, mid, huge}) a.Free(p);
  RequireInvariants(a);
  REQUIRE(a.Stats().allocated_bytes == 0);
  a.EmptyCache();
  REQUIRE(a.Stats().reserved_bytes == 0);
  REQUIRE(device.used() == 0);
  REQUIRE(device.bad_frees == 0);
}

TEST_CASE("blocks split from one segment and coalesce back when freed", "[allocator]") {
  FakeDeviceMemory device(size_t{1} << 32);
  CachingAllocator a(&device);
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(a.Allocate(100 * 1024, kStreamA));
  REQUIRE(device.mallocs == 1);  // all from one 2 MiB small segment
  for (int i = 1; i < 8; ++i) {
    REQUIRE(static_cast<char*>(blocks[i]) - static_cast<char*>(blocks[i - 1]) == 100 * 1024);
  }
  // Free every other block: four 100 KiB holes beside the segment's tail.
  for (int i = 0; i < 8; i += 2) a.Free(blocks[i]);
  RequireInvariants(a);
  const double tail = 2.0 * kMiB - 800 * 1024;
  REQUIRE(a.Stats().fragmentation == Approx(1.0 - tail / (tail + 400 * 1024)));
  for (int i = 1; i < 8; i += 2) a.Free(blocks[i]);
  RequireInvariants(a);
  const auto s = a.Stats();
  REQUIRE(s.largest_free_block == static_cast<int64_t>(2 * kMiB));  // one block again
  REQUIRE(s.fragmentation == 0.0);
  // The whole segment is reusable for one big small-pool request.
  void* p = a.Allocate(kMiB, kStreamA);
  REQUIRE(device.mallocs == 1);
  a.Free(p);
}

TEST_CASE("the smallest free block that fits is chosen", "[allocator]") {
  FakeDeviceMemory device(size_t{1} << 32);
  CachingAllocator a(&device);
  // One segment cut into [64K | keep | 16K | keep | 32K | keep | rest]; free the three holes.
  void* h64 = a.Allocate(64 * 1024, kStreamA);
  void* k1 = a.Allocate(512, kStreamA);
  void* h16 = a.Allocate(16 * 1024, kStreamA);
  void* k2 = a.Allocate(512, kStreamA);
  void* h32 = a.Allocate(32 * 1024, kStreamA);
  void* k3 = a.Allocate(512, kStreamA);
  a.Free(h64);
  a.Free(h16);
  a.Free(h32);
  RequireInvariants(a);
  REQUIRE(a.Allocate(16 * 1024, kStreamA) == h16);  // exact fit
  REQUIRE(a.Allocate(20 * 1024, kStreamA) == h32);  // not the 64K hole, not the tail
  REQUIRE(a.Allocate(60 * 1024, kStreamA) == h64);
  REQUIRE(device.mallocs == 1);
  RequireInvariants(a);
  (void)k1, (void)k2, (void)k3;
}

TEST_CASE("blocks are reused only on their stream; other streams' uses wait for events",
          "[allocator]") {
  FakeDeviceMemory device(size_t{1} << 32);
  CachingAllocator a(&device);
  void* p = a.Allocate(4096, kStreamA);
  a.Free(p);
  void* q = a.Allocate(4096, kStreamB);
  REQUIRE(q != p);  // stream B gets its own segment
  REQUIRE(device.mallocs == 2);
  REQUIRE(a.Allocate(4096, kStreamA) == p);

  // p is handed to stream B's work, then freed: not reusable until B's work completes.
  a.RecordStream(p, kStreamB);
  device.IssueWork(kStreamB);
  a.Free(p);
  REQUIRE(a.Stats().pending_event_blocks == 1);
  RequireInvariants(a);
  void* r = a.Allocate(4096, kStreamA);
  REQUIRE(r != p);
  device.CompleteStream(kStreamB);
  void* s = a.Allocate(4096, kStreamA);
  REQUIRE(s == p);  // the event completed: back in stream A's pool
  REQUIRE(a.Stats().pending_event_blocks == 0);
  REQUIRE(device.live_events() == 0);
  RequireInvariants(a);
}

TEST_CASE("out of memory frees the cache and retries before failing", "[allocator]") {
  FakeDeviceMemory device(50 * kMiB);
  CachingAllocator a(&device);
  void* x = a.Allocate(12 * kMiB, kStreamA);  // 12 MiB segment
  void* y = a.Allocate(12 * kMiB, kStreamB);  // another 12 MiB segment (other stream)
  a.Free(x);
  a.Free(y);
  REQUIRE(a.Stats().reserved_bytes == static_cast<int64_t>(24 * kMiB));
  // 30 MiB does not fit next to the 24 MiB cache: the cache goes back and the retry succeeds.
  void* big = a.Allocate(30 * kMiB, kStreamA);
  REQUIRE(big != nullptr);
  const auto s = a.Stats();
  REQUIRE(s.num_cache_flushes == 1);
  REQUIRE(s.num_ooms == 0);
  REQUIRE(s.reserved_bytes == static_cast<int64_t>(30 * kMiB));
  REQUIRE(device.synchronizes >= 1);
  // A request that cannot fit even with an empty cache fails with a message.
  REQUIRE(a.Allocate(40 * kMiB, kStreamA) == nullptr);
  REQUIRE(a.Stats().num_ooms == 1);
  REQUIRE_THAT(a.last_oom_message(), Catch::Contains("out of device memory"));
  REQUIRE_THAT(a.last_oom_message(), Catch::Contains("30.00 MiB allocated"));
  a.Free(big);
  RequireInvariants(a);
}

TEST_CASE("pending events are drained before an out-of-memory retry", "[allocator]") {
  FakeDeviceMemory device(24 * kMiB);
  CachingAllocator a(&device);
  void* x = a.Allocate(20 * kMiB, kStreamA);
  a.RecordStream(x, kStreamB);
  device.IssueWork(kStreamB);
  a.Free(x);  // waits for stream B
  // Only the synchronize in the retry path can make x's segment reusable.
  void* y = a.Allocate(20 * kMiB, kStreamA);
  REQUIRE(y == x);
  REQUIRE(a.Stats().num_cache_flushes == 1);
  a.Free(y);
  RequireInvariants(a);
}

// A randomized workload: sizes from 1 byte to 48 MiB (log-uniform), three streams, cross-stream
// uses, work completing at random, and a device small enough that the retry path runs. After
// every operation the invariants hold and live allocations never overlap.
TEST_CASE("randomized alloc/free/stream workload keeps every invariant", "[allocator]") {
  std::mt19937_64 rng(20240611);
  FakeDeviceMemory device(768 * kMiB);
  CachingAllocator a(&device);
  void* const streams[3] = {kStreamA, kStreamB, reinterpret_cast<void*>(0x30)};
  struct Live {
    size_t bytes;
    void* stream;
  };
  std::map<char*, Live> live;
  int64_t ooms = 0;
  std::uniform_real_distribution<double> log_size(0.0, std::log2(48.0 * kMiB));
  for (int op = 0; op < 6000; ++op) {
    const int what = static_cast<int>(rng() % 10);
    if (what < 5 || live.empty()) {
      const size_t bytes = static_cast<size_t>(std::exp2(log_size(rng)));
      void* stream = streams[rng() % 3];
      char* p = static_cast<char*>(a.Allocate(bytes, stream));
      if (p == nullptr) {
        ++ooms;
        continue;
      }
      // No overlap with the neighbours in address order.
      auto next = live.lower_bound(p);
      if (next != live.end()) REQUIRE(p + bytes <= next->first);
      if (next != live.begin()) {
        auto prev = std::prev(next);
        REQUIRE(prev->first + prev->second.bytes <= p);
      }
      live[p] = {bytes, stream};
      REQUIRE(a.RequestedSize(p) == bytes);
    } else if (what < 9) {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      if (rng() % 4 == 0) {
        void* other = streams[rng() % 3];
        a.RecordStream(it->first, other);
        device.IssueWork(other);
      }
      a.Free(it->first);
      live.erase(it);
    } else {
      device.CompleteStream(streams[rng() % 3]);
    }
    if (op % 50 == 0) RequireInvariants(a);
    // A block is its rounded request plus a remainder too small to split off.
    int64_t held = 0;
    for (const auto& [p, l] : live) {
      const size_t block = a.BlockSize(p), rounded = CachingAllocator::RoundSize(l.bytes);
      REQUIRE(block >= rounded);
      REQUIRE(block - rounded <= (rounded <= CachingAllocator::kSmallSize
                                      ? CachingAllocator::kMinBlockSize
                                      : CachingAllocator::kSmallSize));
      held += static_cast<int64_t>(block);
    }
    REQUIRE(a.Stats().allocated_bytes == held);
  }
  const auto s = a.Stats();
  INFO("ooms " << ooms << ", flushes " << s.num_cache_flushes << ", segments " << s.num_segments);
  REQUIRE(s.num_cache_flushes > 0);  // the workload exercised the retry path
  REQUIRE(s.peak_reserved_bytes <= static_cast<int64_t>(768 * kMiB));
  for (const auto& [p, l] : live) a.Free(p);
  a.EmptyCache();
  RequireInvariants(a);
  REQUIRE(a.Stats().reserved_bytes == 0);
  REQUIRE(device.used() == 0);
  REQUIRE(device.live_events() == 0);
  REQUIRE(device.bad_frees == 0);
  REQUIRE(device.bad_events == 0);
}

}  // namespace
}  // namespace kiln::testing
