// A test double of the CUDA driver for the caching allocator's host tests (there is no GPU in CI):
// a fake address space with a capacity, and events that complete when the test says their stream
// has caught up. It also checks the allocator's use of it (no double frees, no foreign pointers).
#pragma once

#include <cstdint>
#include <map>
#include <set>

#include "kernels/cuda/caching_allocator.h"

namespace kiln::testing {

class FakeDeviceMemory : public kernels::cuda::DeviceMemoryProvider {
 public:
  explicit FakeDeviceMemory(size_t capacity) : capacity_(capacity) {}

  void* Malloc(size_t bytes) override {
    ++mallocs;
    if (used_ + bytes > capacity_) return nullptr;
    const uintptr_t at = next_;
    next_ += (bytes + 4095) / 4096 * 4096 + 4096;  // never adjacent: segments must not merge
    used_ += bytes;
    segments_[at] = bytes;
    return reinterpret_cast<void*>(at);
  }
  void Free(void* ptr) override {
    auto it = segments_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == segments_.end()) {
      ++bad_frees;
      return;
    }
    used_ -= it->second;
    segments_.erase(it);
  }
  void* RecordEvent(void* stream) override {
    const uintptr_t id = ++next_event_;
    events_[id] = {stream, issued_[stream]};
    return reinterpret_cast<void*>(id);
  }
  bool EventDone(void* event) override {
    auto it = events_.find(reinterpret_cast<uintptr_t>(event));
    if (it == events_.end()) {
      ++bad_events;
      return true;
    }
    return completed_[it->second.stream] >= it->second.position;
  }
  void DestroyEvent(void* event) override {
    if (events_.erase(reinterpret_cast<uintptr_t>(event)) != 1) ++bad_events;
  }
  void Synchronize() override {
    ++synchronizes;
    for (auto& [stream, n] : issued_) completed_[stream] = n;
  }

  // The test "launches work" on a stream and later lets it finish.
  void IssueWork(void* stream) { ++issued_[stream]; }
  void CompleteStream(void* stream) { completed_[stream] = issued_[stream]; }

  size_t used() const { return used_; }
  size_t live_segments() const { return segments_.size(); }
  size_t live_events() const { return events_.size(); }

  int mallocs = 0, synchronizes = 0, bad_frees = 0, bad_events = 0;

 private:
  struct Event {
    void* stream;
    int64_t position;
  };
  size_t capacity_;
  size_t used_ = 0;
  uintptr_t next_ = uintptr_t{1} << 40;
  uintptr_t next_event_ = 0;
  std::map<uintptr_t, size_t> segments_;
  std::map<uintptr_t, Event> events_;
  std::map<void*, int64_t> issued_, completed_;
};

}  // namespace kiln::testing
