// MakeNcclBackend in a build without CUDA: the reason, as one line.
#include "engine/core/device_runtime.h"
#include "engine/dist/nccl_backend.h"

namespace kiln::dist {

absl::StatusOr<std::unique_ptr<Backend>> MakeNcclBackend(Store*, int, int,
                                                         const CommunicatorOptions&) {
  absl::Status device = CheckDeviceAvailable(Device::CUDA(0));
  if (!device.ok()) return device;
  return absl::FailedPreconditionError("NCCL is not available: this binary was built without CUDA");
}

}  // namespace kiln::dist
