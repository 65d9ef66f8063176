// Per-device memory allocators with statistics (current, peak and reserved bytes).
// The CPU allocator hands out 64-byte aligned blocks; the pinned-host allocator is the interface a
// GPU backend implements for page-locked staging memory (on a CPU-only build it is the CPU
// allocator with the pages locked where the OS allows). See Note [Allocators and the step].
#pragma once

#include <atomic>
#include <cstddef>
#include <string>

#include "engine/core/device.h"

namespace kiln {

// Note [Allocators and the step]
// Allocators are for setup: the executor allocates its arena, parameter and gradient buffers once,
// when a plan is bound, and a training step allocates nothing. So allocators favour clarity and
// statistics over speed; the CUDA caching allocator is the exception because eager GPU tests and
// staging buffers allocate often.

struct AllocatorStats {
  int64_t current_bytes = 0;   // bytes handed out and not yet returned
  int64_t peak_bytes = 0;      // high-water mark of current_bytes
  int64_t reserved_bytes = 0;  // bytes held from the system (>= current for caching allocators)
  int64_t num_allocs = 0;
  int64_t num_frees = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory aligned to at least kAlignment, or nullptr when out of memory.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Deallocate(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual AllocatorStats Stats() const = 0;
  virtual void ResetPeak() = 0;
  // Returns to the system what the allocator holds that no tensor uses (a caching allocator's free
  // blocks); allocators that cache nothing have nothing to return.
  virtual void ReleaseCache() {}

  static constexpr size_t kAlignment = 64;
};

// Bookkeeping shared by simple allocators.
class StatsTracker {
 public:
  void OnAlloc(int64_t bytes);
  void OnFree(int64_t bytes);
  AllocatorStats Snapshot() const;
  void ResetPeak() { peak_.store(current_.load()); }

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0}, frees_{0};
};

// 64-byte aligned host memory.
class CpuAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override;
  void Deallocate(void* ptr, size_t bytes) override;
  Device device() const override { return Device::CPU(); }
  std::string name() const override { return "cpu"; }
  AllocatorStats Stats() const override { return stats_.Snapshot(); }
  void ResetPeak() override { stats_.ResetPeak(); }

 private:
  StatsTracker stats_;
};

// Page-locked host memory for device transfers. The default implementation locks CPU pages with
// mlock where permitted (failure to lock is not an error: the memory is still usable).
class PinnedHostAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override;
  void Deallocate(void* ptr, size_t bytes) override;
  Device device() const override { return Device::CPU(); }
  std::string name() const override { return "pinned-host"; }
  AllocatorStats Stats() const override { return stats_.Snapshot(); }
  void ResetPeak() override { stats_.ResetPeak(); }

 private:
  StatsTracker stats_;
};

// The allocator for a device. CPU is always present; a GPU backend registers its allocator at
// start-up with RegisterAllocator. Returns nullptr when no allocator is registered for `device`.
Allocator* GetAllocator(Device device);
void RegisterAllocator(DeviceType type, Allocator* (*factory)(int index));

// The process-wide pinned-host allocator (replaceable by a GPU backend).
Allocator* GetPinnedHostAllocator();
void SetPinnedHostAllocator(Allocator* allocator);

}  // namespace kiln
