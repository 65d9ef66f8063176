// The device-runtime registry and the availability check.
#include "engine/core/device_runtime.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace kiln {
namespace {

std::atomic<DeviceRuntime*> g_runtimes[kNumDeviceTypes];

}  // namespace

void RegisterDeviceRuntime(DeviceType type, DeviceRuntime* runtime) {
  g_runtimes[static_cast<int>(type)].store(runtime);
}

DeviceRuntime* GetDeviceRuntime(DeviceType type) {
  return g_runtimes[static_cast<int>(type)].load();
}

absl::Status CheckDeviceAvailable(Device device) {
  if (device.is_cpu()) return absl::OkStatus();
  DeviceRuntime* runtime = GetDeviceRuntime(device.type);
  if (runtime == nullptr) {
    return absl::FailedPreconditionError(
        "no CUDA device available: this program was linked without the CUDA backend");
  }
  const absl::Status available = runtime->Available();
  if (!available.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device available: ", available.message()));
  }
  const int count = runtime->DeviceCount();
  if (device.index < 0 || device.index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device available: ", device.ToString(), " requested, ", count,
                     " device(s) present"));
  }
  return absl::OkStatus();
}

DeviceRuntime& RuntimeFor(Device device) {
  DeviceRuntime* runtime = GetDeviceRuntime(device.type);
  KILN_CHECK(runtime != nullptr) << "no device runtime registered for " << device;
  return *runtime;
}

}  // namespace kiln
