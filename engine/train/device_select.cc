// TrainingDevice / CheckTrainingDevice: resources.device against the device runtimes linked in.
#include "engine/train/device_select.h"

#include "absl/strings/str_cat.h"
#include "engine/core/device_runtime.h"
#include "engine/core/status.h"

namespace kiln::train {

absl::StatusOr<Device> TrainingDevice(const kiln::v1::JobSpec& spec) {
  const std::string name = spec.resources().has_device() ? spec.resources().device() : "cpu";
  absl::StatusOr<Device> device = ParseDevice(name);
  if (!device.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("resources.device: ", device.status().message()));
  }
  return device;
}

// Note [Training on CUDA]
// On a GPU the session binds its executors there, makes batches in host memory and copies them
// over, reads the loss back, takes the gradient statistics and the AdamW step on the device
// (kernels/cuda/device_optim.h) and stages optimizer state through the host for checkpoints.
// One process without ZeRO for now: data parallelism over NCCL is not wired into the trainer.
absl::Status CheckTrainingDevice(const kiln::v1::JobSpec& spec) {
  KILN_ASSIGN_OR_RETURN(const Device device, TrainingDevice(spec));
  return CheckDeviceAvailable(device);
}

}  // namespace kiln::train
