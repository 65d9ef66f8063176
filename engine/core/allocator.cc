// CPU and pinned-host allocators and the per-device allocator registry.
#include "engine/core/allocator.h"

#include <sys/mman.h>

#include <cstdlib>
#include <mutex>

namespace kiln {

void StatsTracker::OnAlloc(int64_t bytes) {
  const int64_t now = current_.fetch_add(bytes) + bytes;
  int64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  allocs_.fetch_add(1);
}

void StatsTracker::OnFree(int64_t bytes) {
  current_.fetch_sub(bytes);
  frees_.fetch_add(1);
}

AllocatorStats StatsTracker::Snapshot() const {
  AllocatorStats s;
  s.current_bytes = current_.load();
  s.peak_bytes = peak_.load();
  s.reserved_bytes = s.current_bytes;
  s.num_allocs = allocs_.load();
  s.num_frees = frees_.load();
  return s;
}

namespace {

size_t RoundUp(size_t bytes) {
  const size_t a = Allocator::kAlignment;
  return bytes == 0 ? a : (bytes + a - 1) / a * a;
}

}  // namespace

void* CpuAllocator::Allocate(size_t bytes) {
  void* p = std::aligned_alloc(kAlignment, RoundUp(bytes));
  if (p != nullptr) stats_.OnAlloc(static_cast<int64_t>(bytes));
  return p;
}

void CpuAllocator::Deallocate(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  stats_.OnFree(static_cast<int64_t>(bytes));
}

void* PinnedHostAllocator::Allocate(size_t bytes) {
  void* p = std::aligned_alloc(kAlignment, RoundUp(bytes));
  if (p == nullptr) return nullptr;
  (void)mlock(p, RoundUp(bytes));  // best effort; RLIMIT_MEMLOCK may refuse
  stats_.OnAlloc(static_cast<int64_t>(bytes));
  return p;
}

void PinnedHostAllocator::Deallocate(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  (void)munlock(ptr, RoundUp(bytes));
  std::free(ptr);
  stats_.OnFree(static_cast<int64_t>(bytes));
}

namespace {

struct Registry {
  std::mutex mu;
  Allocator* (*factories[kNumDeviceTypes])(int) = {};
  Allocator* pinned = nullptr;
};

Registry& GetRegistry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

Allocator* GetAllocator(Device device) {
  if (device.is_cpu()) {
    static CpuAllocator* cpu = new CpuAllocator();
    return cpu;
  }
  Registry& r = GetRegistry();
  Allocator* (*factory)(int) = nullptr;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    factory = r.factories[static_cast<int>(device.type)];
  }
  // Called unlocked: a backend's first use may register its pinned-host allocator (same lock).
  return factory == nullptr ? nullptr : factory(device.index);
}

void RegisterAllocator(DeviceType type, Allocator* (*factory)(int index)) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[static_cast<int>(type)] = factory;
}

Allocator* GetPinnedHostAllocator() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.pinned == nullptr) r.pinned = new PinnedHostAllocator();
  return r.pinned;
}

void SetPinnedHostAllocator(Allocator* allocator) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.pinned = allocator;
}

}  // namespace kiln
