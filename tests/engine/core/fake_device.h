// A fake CUDA device for host tests of the device paths (there is no GPU in CI): a DeviceRuntime
// whose "device memory" is host memory that Kiln must touch only through the runtime's Copy and
// Memset, and an allocator that hands out garbage-filled blocks (a missing zero-fill shows) and
// registers the pinned-host allocator on first use, as the real backend does.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "engine/core/allocator.h"
#include "engine/core/device_runtime.h"

namespace kiln::testing {

class FakeRuntime : public DeviceRuntime {
 public:
  absl::Status Available() override { return absl::OkStatus(); }
  int DeviceCount() override { return 1; }
  std::string DeviceName(int) override { return "fake"; }
  void Copy(void* dst, const void* src, size_t bytes, Device) override {
    ++copies;
    std::memmove(dst, src, bytes);
  }
  void CopyAsync(void* dst, const void* src, size_t bytes, Device) override {
    ++async_copies;
    std::memmove(dst, src, bytes);
  }
  void Memset(void* dst, int value, size_t bytes, Device) override {
    ++memsets;
    std::memset(dst, value, bytes);
  }
  void Synchronize(Device) override {}
  StreamHandle ComputeStream(Device) override { return nullptr; }
  StreamHandle CreateStream(Device) override { return nullptr; }
  void DestroyStream(Device, StreamHandle) override {}
  void SynchronizeStream(Device, StreamHandle) override {}
  EventHandle CreateEvent(Device) override { return nullptr; }
  void DestroyEvent(Device, EventHandle) override {}
  void RecordEvent(Device, EventHandle, StreamHandle) override { ++events_recorded; }
  void StreamWaitEvent(Device, StreamHandle, EventHandle) override {}
  bool EventDone(Device, EventHandle) override { return true; }
  void SynchronizeEvent(Device, EventHandle) override { ++event_waits; }
  int copies = 0, async_copies = 0, memsets = 0, events_recorded = 0, event_waits = 0;
};

class FakeDeviceAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 64 + 63) / 64 * 64);
    std::memset(p, 0x7f, bytes + 64);
    live_bytes += static_cast<int64_t>(bytes);
    peak_bytes = std::max(peak_bytes, live_bytes);
    return p;
  }
  void Deallocate(void* ptr, size_t bytes) override {
    live_bytes -= static_cast<int64_t>(bytes);
    std::free(ptr);
  }
  int64_t live_bytes = 0, peak_bytes = 0;  // as requested, for tests of what is held at once
  Device device() const override { return Device::CUDA(0); }
  std::string name() const override { return "fake-cuda"; }
  AllocatorStats Stats() const override { return {}; }
  void ResetPeak() override {}
};

// The fake device's one allocator.
inline FakeDeviceAllocator* FakeCudaAllocator() {
  static FakeDeviceAllocator* allocator = new FakeDeviceAllocator();
  return allocator;
}

// Registers the fake as the CUDA runtime and allocator of this process (once); returns it.
inline FakeRuntime* InstallFakeCuda() {
  static FakeRuntime* runtime = [] {
    auto* r = new FakeRuntime();
    RegisterDeviceRuntime(DeviceType::kCUDA, r);
    RegisterAllocator(DeviceType::kCUDA, [](int index) -> Allocator* {
      static FakeDeviceAllocator* allocator = [] {
        SetPinnedHostAllocator(new PinnedHostAllocator());  // takes the registry's lock
        return FakeCudaAllocator();
      }();
      return index == 0 ? allocator : nullptr;
    });
    return r;
  }();
  return runtime;
}

}  // namespace kiln::testing
