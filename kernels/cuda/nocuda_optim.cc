// DeviceAdamW and GradStatsReducer in a build without CUDA: creation reports the missing device;
// nothing else is reachable, since no device tensor can exist.
#include "engine/core/device_runtime.h"
#include "kernels/cuda/device_optim.h"

namespace kiln::kernels::cuda {

absl::StatusOr<std::unique_ptr<DeviceAdamW>> DeviceAdamW::Create(const DeviceAdamWConfig&,
                                                                 std::vector<DeviceSegment>,
                                                                 int64_t, Device device) {
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(device));
  return absl::FailedPreconditionError("CUDA device optimizer in a build without CUDA");
}

DeviceAdamW::~DeviceAdamW() = default;

void DeviceAdamW::Step(const Tensor&, const Tensor&, const Tensor&, float, float, int64_t) {
  KILN_CHECK(false) << "DeviceAdamW::Step in a build without CUDA";
}

GradStats GradStatsReducer::Compute(const Tensor&) {
  KILN_CHECK(false) << "GradStatsReducer::Compute in a build without CUDA";
  return {};
}

}  // namespace kiln::kernels::cuda
