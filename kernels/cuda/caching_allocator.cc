// CachingAllocator: pools, best fit, splitting, coalescing, stream events and the out-of-memory
// retry (Note [Caching allocator] in caching_allocator.h).
#include "kernels/cuda/caching_allocator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace kiln::kernels::cuda {
namespace {

std::string Mib(int64_t bytes) {
  std::ostringstream os;
  os.precision(2);
  os << std::fixed << static_cast<double>(bytes) / (1 << 20) << " MiB";
  return os.str();
}

}  // namespace

// Free blocks order by (stream, size, address): lower_bound on (stream, size) is the best fit.
bool CachingAllocator::BlockLess::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) {
    return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
  }
  if (a->size != b->size) return a->size < b->size;
  return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
}

size_t CachingAllocator::RoundSize(size_t bytes) {
  if (bytes < kMinBlockSize) return kMinBlockSize;
  return (bytes + kMinBlockSize - 1) / kMinBlockSize * kMinBlockSize;
}

size_t CachingAllocator::SegmentSize(size_t rounded) {
  if (rounded <= kSmallSize) return kSmallBuffer;
  if (rounded < kMinLargeAlloc) return kLargeBuffer;
  return (rounded + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
}

CachingAllocator::~CachingAllocator() {
  // Callers should have freed everything; return whatever segments remain regardless.
  if (!events_.empty() || !live_.empty()) provider_->Synchronize();
  for (const PendingEvent& e : events_) provider_->DestroyEvent(e.event);
  for (Block* b : blocks_) {
    if (b->prev == nullptr) provider_->Free(b->ptr);
  }
  for (Block* b : blocks_) delete b;
}

CachingAllocator::Block* CachingAllocator::FindFree(size_t size, void* stream, bool small) {
  Pool& pool = PoolFor(small);
  Block key;
  key.stream = stream;
  key.size = size;
  key.ptr = nullptr;
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

CachingAllocator::Block* CachingAllocator::NewSegment(size_t size, void* stream, bool small) {
  void* ptr = provider_->Malloc(size);
  if (ptr == nullptr) return nullptr;
  Block* b = new Block();
  b->size = size;
  b->ptr = static_cast<char*>(ptr);
  b->stream = stream;
  b->small = small;
  blocks_.insert(b);
  stats_.reserved_bytes += static_cast<int64_t>(size);
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  ++stats_.num_segments;
  ++stats_.num_device_mallocs;
  return b;
}

void* CachingAllocator::Allocate(size_t bytes, void* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  ProcessEvents();
  const size_t size = RoundSize(bytes);
  const bool small = size <= kSmallSize;
  Block* block = FindFree(size, stream, small);
  if (block == nullptr) {
    const size_t segment = SegmentSize(size);
    block = NewSegment(segment, stream, small);
    if (block == nullptr) {
      // Note [Caching allocator]: return the cache to the driver and try once more.
      ++stats_.num_cache_flushes;
      SynchronizeAndDrainEvents();
      block = FindFree(size, stream, small);
      if (block == nullptr) {
        ReleaseCachedSegments();
        block = NewSegment(segment, stream, small);
      }
    }
    if (block == nullptr) {
      ++stats_.num_ooms;
      std::ostringstream os;
      os << "out of device memory: tried to allocate " << Mib(static_cast<int64_t>(bytes))
         << " (segment " << Mib(static_cast<int64_t>(segment)) << ") after returning the cache; "
         << DescribeLocked();
      last_oom_ = os.str();
      return nullptr;
    }
  }
  // Split off the remainder when it is worth keeping.
  const size_t remaining = block->size - size;
  if ((small && remaining >= kMinBlockSize) || (!small && remaining > kSmallSize)) {
    Block* rest = new Block();
    rest->size = remaining;
    rest->ptr = block->ptr + size;
    rest->stream = stream;
    rest->small = small;
    rest->prev = block;
    rest->next = block->next;
    if (block->next != nullptr) block->next->prev = rest;
    block->next = rest;
    block->size = size;
    blocks_.insert(rest);
    PoolFor(small).insert(rest);
  }
  block->allocated = true;
  block->requested = bytes;
  live_[block->ptr] = block;
  stats_.allocated_bytes += static_cast<int64_t>(block->size);
  stats_.requested_bytes += static_cast<int64_t>(bytes);
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  ++stats_.num_allocs;
  return block->ptr;
}

void CachingAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    std::fprintf(stderr, "CachingAllocator::Free of unknown pointer %p\n", ptr);
    std::abort();
  }
  Block* block = it->second;
  live_.erase(it);
  block->allocated = false;
  stats_.allocated_bytes -= static_cast<int64_t>(block->size);
  stats_.requested_bytes -= static_cast<int64_t>(block->requested);
  ++stats_.num_frees;
  if (!block->stream_uses.empty()) {
    for (void* s : block->stream_uses) {
      events_.push_back({provider_->RecordEvent(s), block});
      ++block->pending_events;
    }
    block->stream_uses.clear();
    return;  // back to the pool once the events complete (ProcessEvents)
  }
  InsertFree(block);
}

void CachingAllocator::RecordStream(void* ptr, void* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end() || it->second->stream == stream) return;
  it->second->stream_uses.insert(stream);
}

void CachingAllocator::InsertFree(Block* block) {
  Pool& pool = PoolFor(block->small);
  // Merge with free neighbours (never with blocks still waiting for events).
  for (Block* neighbour : {block->prev, block->next}) {
    if (neighbour == nullptr || neighbour->allocated || neighbour->pending_events > 0) continue;
    pool.erase(neighbour);
    if (neighbour == block->prev) {
      block->ptr = neighbour->ptr;
      block->prev = neighbour->prev;
      if (block->prev != nullptr) block->prev->next = block;
    } else {
      block->next = neighbour->next;
      if (block->next != nullptr) block->next->prev = block;
    }
    block->size += neighbour->size;
    blocks_.erase(neighbour);
    delete neighbour;
  }
  pool.insert(block);
}

void CachingAllocator::ProcessEvents() {
  // Events complete in any order; keep the ones still pending.
  size_t kept = 0;
  for (size_t i = 0; i < events_.size(); ++i) {
    PendingEvent e = events_[i];
    if (!provider_->EventDone(e.event)) {
      events_[kept++] = e;
      continue;
    }
    provider_->DestroyEvent(e.event);
    if (--e.block->pending_events == 0) InsertFree(e.block);
  }
  events_.resize(kept);
}

void CachingAllocator::SynchronizeAndDrainEvents() {
  provider_->Synchronize();
  ProcessEvents();
}

void CachingAllocator::ReleaseCachedSegments() {
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* b = *it;
      if (b->prev != nullptr || b->next != nullptr) {  // part of a segment still in use
        ++it;
        continue;
      }
      it = pool->erase(it);
      provider_->Free(b->ptr);
      stats_.reserved_bytes -= static_cast<int64_t>(b->size);
      --stats_.num_segments;
      ++stats_.num_device_frees;
      blocks_.erase(b);
      delete b;
    }
  }
}

void CachingAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mu_);
  SynchronizeAndDrainEvents();
  ReleaseCachedSegments();
}

CachingAllocatorStats CachingAllocator::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  CachingAllocatorStats s = stats_;
  s.cached_free_bytes = 0;
  s.largest_free_block = 0;
  for (const Pool* pool : {&small_pool_, &large_pool_}) {
    for (const Block* b : *pool) {
      s.cached_free_bytes += static_cast<int64_t>(b->size);
      s.largest_free_block = std::max(s.largest_free_block, static_cast<int64_t>(b->size));
    }
  }
  s.fragmentation = s.cached_free_bytes == 0
                        ? 0.0
                        : 1.0 - static_cast<double>(s.largest_free_block) / s.cached_free_bytes;
  s.pending_event_blocks = 0;
  for (const Block* b : blocks_) s.pending_event_blocks += b->pending_events > 0;
  return s;
}

void CachingAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

std::string CachingAllocator::last_oom_message() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_oom_;
}

size_t CachingAllocator::RequestedSize(void* ptr) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second->requested;
}

size_t CachingAllocator::BlockSize(void* ptr) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second->size;
}

std::string CachingAllocator::DescribeLocked() const {
  int64_t cached = 0;
  for (const Pool* pool : {&small_pool_, &large_pool_}) {
    for (const Block* b : *pool) cached += static_cast<int64_t>(b->size);
  }
  std::ostringstream os;
  os << Mib(stats_.allocated_bytes) << " allocated, " << Mib(stats_.reserved_bytes)
     << " reserved in " << stats_.num_segments << " segments, " << Mib(cached)
     << " cached free (held by partly used segments)";
  return os.str();
}

std::string CachingAllocator::CheckInvariants() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream err;
  int64_t reserved = 0, allocated = 0, segments = 0;
  size_t free_blocks = 0;
  for (const Block* b : blocks_) {
    if (b->prev == nullptr) {
      ++segments;
      for (const Block* x = b; x != nullptr; x = x->next) {
        reserved += static_cast<int64_t>(x->size);
        if (x->next != nullptr && x->ptr + x->size != x->next->ptr) {
          err << "blocks of a segment do not tile: " << static_cast<const void*>(x->ptr);
          return err.str();
        }
        if (x->next != nullptr && x->next->prev != x) return "broken neighbour links";
        const bool x_free = !x->allocated && x->pending_events == 0;
        const bool next_free =
            x->next != nullptr && !x->next->allocated && x->next->pending_events == 0;
        if (x_free && next_free) return "two adjacent free blocks were not merged";
        if (x->small != b->small) return "a segment mixes pools";
      }
    }
    if (b->allocated) {
      allocated += static_cast<int64_t>(b->size);
      auto it = live_.find(b->ptr);
      if (it == live_.end() || it->second != b) return "allocated block missing from live map";
    } else if (b->pending_events == 0) {
      ++free_blocks;
      const Pool& pool = b->small ? small_pool_ : large_pool_;
      if (pool.count(const_cast<Block*>(b)) != 1) return "free block missing from its pool";
    }
  }
  if (free_blocks != small_pool_.size() + large_pool_.size()) return "pools hold stale blocks";
  if (reserved != stats_.reserved_bytes) return "reserved bytes disagree with the segments";
  if (allocated != stats_.allocated_bytes) return "allocated bytes disagree with the blocks";
  if (segments != stats_.num_segments) return "segment count disagrees";
  if (live_.size() != static_cast<size_t>(stats_.num_allocs - stats_.num_frees)) {
    return "live allocations disagree with the counters";
  }
  return "";
}

}  // namespace kiln::kernels::cuda
