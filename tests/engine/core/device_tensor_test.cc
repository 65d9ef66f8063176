// Tensor's device paths (Note [Device tensors through the host]) on the CPU alone: a fake CUDA
// runtime whose "device memory" is host memory that only the runtime's Copy and Memset touch, and
// whose allocator registers the pinned-host allocator on first use (as the real backend does).
// Checks zero-fill, contiguous and strided copies in both directions with dtype conversion,
// Fill, ToFloats, Clone and the availability check, without a GPU.
#include <cstdlib>
#include <cstring>

#include "engine/core/allocator.h"
#include "engine/core/device_runtime.h"
#include "engine/core/tensor.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

class FakeRuntime : public DeviceRuntime {
 public:
  absl::Status Available() override { return absl::OkStatus(); }
  int DeviceCount() override { return 1; }
  std::string DeviceName(int) override { return "fake"; }
  void Copy(void* dst, const void* src, size_t bytes, Device) override {
    ++copies;
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
  void RecordEvent(Device, EventHandle, StreamHandle) override {}
  void StreamWaitEvent(Device, StreamHandle, EventHandle) override {}
  bool EventDone(Device, EventHandle) override { return true; }
  void SynchronizeEvent(Device, EventHandle) override {}
  int copies = 0, memsets = 0;
};

// Hands out garbage-filled memory so that a missing zero-fill shows.
class FakeDeviceAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override {
    void* p = std::malloc(bytes + 64);
    std::memset(p, 0x7f, bytes + 64);
    return p;
  }
  void Deallocate(void* ptr, size_t) override { std::free(ptr); }
  Device device() const override { return Device::CUDA(0); }
  std::string name() const override { return "fake-cuda"; }
  AllocatorStats Stats() const override { return {}; }
  void ResetPeak() override {}
};

FakeRuntime* g_runtime = nullptr;

Allocator* FakeFactory(int index) {
  static FakeDeviceAllocator* allocator = [] {
    SetPinnedHostAllocator(new PinnedHostAllocator());  // takes the registry's lock
    return new FakeDeviceAllocator();
  }();
  return index == 0 ? allocator : nullptr;
}

void Install() {
  if (g_runtime != nullptr) return;
  g_runtime = new FakeRuntime();
  RegisterDeviceRuntime(DeviceType::kCUDA, g_runtime);
  RegisterAllocator(DeviceType::kCUDA, &FakeFactory);
}

TEST_CASE("device tensors are zero-filled and copy contiguously through the runtime", "[device]") {
  Install();
  REQUIRE(CheckDeviceAvailable(Device::CUDA(0)).ok());
  REQUIRE_FALSE(CheckDeviceAvailable(Device::CUDA(1)).ok());
  const Tensor d = Tensor::Zeros({3, 4}, DType::kF32, Device::CUDA(0));
  REQUIRE(g_runtime->memsets >= 1);
  REQUIRE(d.ToFloats() == std::vector<float>(12, 0.0f));
  const Tensor h = Tensor::FromFloats({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const int before = g_runtime->copies;
  d.CopyFrom(h);
  REQUIRE(g_runtime->copies == before + 1);  // one runtime copy, no staging
  REQUIRE(d.ToFloats() == h.ToFloats());
  REQUIRE(d.Clone().device() == Device::CUDA(0));
  REQUIRE(d.Clone().ToFloats() == h.ToFloats());
}

TEST_CASE("strided and converting device copies stage through the host", "[device]") {
  Install();
  const Tensor h = Tensor::FromFloats({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const Tensor d = Tensor::Zeros({3, 4}, DType::kF32, Device::CUDA(0));
  d.CopyFrom(h);
  // Device transpose to host, and host transpose into a device bf16 tensor.
  REQUIRE(d.Transpose(0, 1).ToFloats() == h.Transpose(0, 1).ToFloats());
  const Tensor bf = Tensor::Zeros({4, 3}, DType::kBF16, Device::CUDA(0));
  bf.CopyFrom(h.Transpose(0, 1));
  REQUIRE(bf.ToFloats() == h.Transpose(0, 1).ToFloats());
  // Writing a strided device view keeps the elements between its strides.
  d.Slice(1, 1, 3).Fill(-1.0f);
  REQUIRE(d.ToFloats() == std::vector<float>{0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11});
  d.Slice(1, 0, 1).Fill(0.0f);
  REQUIRE(d.ToFloats() == std::vector<float>{0, -1, -1, 3, 0, -1, -1, 7, 0, -1, -1, 11});
  // Device to device with conversion.
  const Tensor back = Tensor::Zeros({3, 4}, DType::kF16, Device::CUDA(0));
  back.CopyFrom(d);
  REQUIRE(back.ToFloats() == d.ToFloats());
  REQUIRE(GetAllocator(Device::CUDA(0))->name() == "fake-cuda");
  REQUIRE(GetAllocator(Device::CUDA(1)) == nullptr);
}

}  // namespace
}  // namespace kiln::testing
