// The bookkeeping of the CUDA caching allocator as a plain C++ class: best-fit blocks with
// splitting and coalescing, a small and a large pool, per-stream reuse with events for blocks
// used on other streams, free-cache-and-retry before out of memory, statistics. The device memory
// and events come from a DeviceMemoryProvider: cudaMalloc/cudaFree in the CUDA backend, a fake
// in host tests. See Note [Caching allocator].
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kiln::kernels::cuda {

// Note [Caching allocator]
// Device memory is taken from the driver in segments and handed out as blocks. Requests are
// rounded to 512 bytes. Requests up to 1 MiB come from the small pool, whose segments are 2 MiB;
// larger ones from the large pool, whose segments are 20 MiB for requests under 10 MiB and the
// request rounded to 2 MiB otherwise. A request takes the smallest free block of its pool and
// stream that fits (best fit) and splits off the rest when the rest is worth keeping (>= 512 bytes
// in the small pool, > 1 MiB in the large one). A freed block merges with free neighbours of its
// segment. Blocks are reused only on the stream they were allocated on: kernels on one stream run
// in order, so reuse there is safe without synchronization. A block that was also used on other
// streams (RecordStream) gets an event on each of them when freed and returns to its pool only
// once all have completed. When the driver refuses a segment, every cached segment that is wholly
// free is returned to the driver (after waiting for pending events) and the request is retried;
// only then is it out of memory, with the statistics in the message.

// The driver side: device memory and events. Implementations must be thread-compatible (the
// allocator serializes its calls).
class DeviceMemoryProvider {
 public:
  virtual ~DeviceMemoryProvider() = default;
  // Null when the device has no room for `bytes`.
  virtual void* Malloc(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  // An event that completes when the work issued to `stream` so far has completed.
  virtual void* RecordEvent(void* stream) = 0;
  virtual bool EventDone(void* event) = 0;
  virtual void DestroyEvent(void* event) = 0;
  // Waits for all work on the device (before cached memory goes back to the driver).
  virtual void Synchronize() = 0;
};

struct CachingAllocatorStats {
  int64_t allocated_bytes = 0;  // handed out to callers (rounded sizes)
  int64_t requested_bytes = 0;  // as requested (unrounded)
  int64_t reserved_bytes = 0;   // held from the driver (segments)
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
  int64_t cached_free_bytes = 0;  // reserved but not allocated
  int64_t largest_free_block = 0;
  // 1 - largest free block / cached free bytes: 0 when the free cache is one block (or empty),
  // near 1 when it is scattered in small pieces.
  double fragmentation = 0;
  int64_t num_allocs = 0;
  int64_t num_frees = 0;
  int64_t num_segments = 0;
  int64_t num_device_mallocs = 0;
  int64_t num_device_frees = 0;
  int64_t num_cache_flushes = 0;  // out-of-memory retries that returned cached segments
  int64_t num_ooms = 0;
  int64_t pending_event_blocks = 0;  // freed blocks waiting for another stream's events
};

class CachingAllocator {
 public:
  static constexpr size_t kMinBlockSize = 512;
  static constexpr size_t kSmallSize = size_t{1} << 20;     // small pool: requests <= 1 MiB
  static constexpr size_t kSmallBuffer = size_t{2} << 20;   // small pool segment
  static constexpr size_t kLargeBuffer = size_t{20} << 20;  // large segment for requests < 10 MiB
  static constexpr size_t kMinLargeAlloc = size_t{10} << 20;
  static constexpr size_t kRoundLarge = size_t{2} << 20;

  explicit CachingAllocator(DeviceMemoryProvider* provider) : provider_(provider) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Null when out of memory even after returning the cache (last_oom_message() says why).
  void* Allocate(size_t bytes, void* stream);
  void Free(void* ptr);
  // `ptr` is also used by work on `stream`: its memory is not reused until that work completes.
  void RecordStream(void* ptr, void* stream);
  // Returns every wholly free cached segment to the driver.
  void EmptyCache();

  CachingAllocatorStats Stats() const;
  void ResetPeak();
  std::string last_oom_message() const;
  // The requested size of a live allocation, and the size of the block serving it (0 if unknown).
  size_t RequestedSize(void* ptr) const;
  size_t BlockSize(void* ptr) const;

  // Checks every structural invariant (segments tile exactly, neighbours never both free, pools
  // hold exactly the free blocks, counters match); returns an empty string or the first violation.
  std::string CheckInvariants() const;

  static size_t RoundSize(size_t bytes);
  static size_t SegmentSize(size_t rounded);

 private:
  struct Block;
  struct BlockLess {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BlockLess>;
  struct Block {
    size_t size = 0;
    size_t requested = 0;
    char* ptr = nullptr;
    void* stream = nullptr;
    bool allocated = false;
    bool small = false;     // which pool
    Block* prev = nullptr;  // neighbours within the segment
    Block* next = nullptr;
    std::set<void*> stream_uses;  // other streams (RecordStream)
    int pending_events = 0;
  };

  Pool& PoolFor(bool small) { return small ? small_pool_ : large_pool_; }
  Block* FindFree(size_t size, void* stream, bool small);
  Block* NewSegment(size_t size, void* stream, bool small);
  void InsertFree(Block* block);  // coalesces, then adds to its pool
  void ProcessEvents();
  void SynchronizeAndDrainEvents();
  void ReleaseCachedSegments();
  std::string DescribeLocked() const;

  DeviceMemoryProvider* provider_;
  mutable std::mutex mu_;
  Pool small_pool_, large_pool_;
  std::unordered_map<void*, Block*> live_;  // allocated blocks by pointer
  std::unordered_set<Block*> blocks_;       // every block of every segment (owned)
  struct PendingEvent {
    void* event;
    Block* block;
  };
  std::vector<PendingEvent> events_;
  CachingAllocatorStats stats_;
  std::string last_oom_;
};

}  // namespace kiln::kernels::cuda
