// The CUDA backend of a build without the toolkit (--config=nocuda): a DeviceRuntime that says so,
// so `device: cuda` fails with "no CUDA device available: this binary was built without CUDA".
#include "absl/status/status.h"
#include "engine/core/device_runtime.h"
#include "engine/core/status.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

class NoCudaRuntime : public DeviceRuntime {
 public:
  absl::Status Available() override {
    return absl::UnavailableError("this binary was built without CUDA (--config=nocuda)");
  }
  int DeviceCount() override { return 0; }
  std::string DeviceName(int) override { return ""; }
  // Nothing below is reachable: no device memory can exist without a device.
  void Copy(void*, const void*, size_t, Device) override { Unreachable(); }
  void CopyAsync(void*, const void*, size_t, Device) override { Unreachable(); }
  void Memset(void*, int, size_t, Device) override { Unreachable(); }
  void Synchronize(Device) override { Unreachable(); }
  StreamHandle ComputeStream(Device) override { Unreachable(); }
  StreamHandle CreateStream(Device) override { Unreachable(); }
  void DestroyStream(Device, StreamHandle) override { Unreachable(); }
  void SynchronizeStream(Device, StreamHandle) override { Unreachable(); }
  EventHandle CreateEvent(Device) override { Unreachable(); }
  void DestroyEvent(Device, EventHandle) override { Unreachable(); }
  void RecordEvent(Device, EventHandle, StreamHandle) override { Unreachable(); }
  void StreamWaitEvent(Device, StreamHandle, EventHandle) override { Unreachable(); }
  bool EventDone(Device, EventHandle) override { Unreachable(); }
  void SynchronizeEvent(Device, EventHandle) override { Unreachable(); }

 private:
  [[noreturn]] static void Unreachable() {
    KILN_CHECK(false) << "CUDA device runtime used in a build without CUDA";
    __builtin_unreachable();
  }
};

struct Registration {
  Registration() {
    static NoCudaRuntime* runtime = new NoCudaRuntime();
    RegisterDeviceRuntime(DeviceType::kCUDA, runtime);
  }
} registration;

}  // namespace

CachingAllocator* DeviceCachingAllocator(int) { return nullptr; }  // no device, no allocator

}  // namespace kiln::kernels::cuda
