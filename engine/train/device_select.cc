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

absl::StatusOr<Device> RankDevice(const kiln::v1::JobSpec& spec, int rank, int world) {
  KILN_ASSIGN_OR_RETURN(const Device device, TrainingDevice(spec));
  if (device.is_cpu()) return device;
  if (spec.resources().device() != "cuda") {
    if (world > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resources.device: ", spec.resources().device(), " names one GPU but the job has ", world,
          " ranks; use \"cuda\" (rank r trains on visible GPU r modulo their count)"));
    }
    return device;
  }
  const int count = RuntimeFor(device).DeviceCount();
  return Device::CUDA(count > 0 ? rank % count : 0);
}

// Note [Training on CUDA]
// On a GPU the session binds its executors there, makes batches in host memory and copies them
// over, reads the loss back, takes the gradient statistics and the AdamW step on the device
// (kernels/cuda/device_optim.h) and stages optimizer state through the host for checkpoints.
// Data parallel ranks (one GPU each, RankDevice) exchange gradients and ZeRO shards over NCCL;
// every ZeRO buffer lives on the rank's GPU (Note [ZeRO on a GPU] in engine/dist/zero_runtime.h).
absl::Status CheckTrainingDevice(const kiln::v1::JobSpec& spec) {
  KILN_ASSIGN_OR_RETURN(const Device device, TrainingDevice(spec));
  return CheckDeviceAvailable(device);
}

}  // namespace kiln::train
