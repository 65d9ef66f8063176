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
// The executor, every kernel, the caching allocator and the device AdamW run on CUDA
// (kernels/cuda; tests/engine/cuda drives a GPT-2 and a Llama step loop on them). The session's
// step loop still stages batches, the loss seed, gradient statistics, the optimizer state and
// checkpoints through host pointers, so a spec asking for cuda on a machine that has a device is
// refused with a clear message instead of silently training on the CPU.
absl::Status CheckTrainingDevice(const kiln::v1::JobSpec& spec) {
  KILN_ASSIGN_OR_RETURN(const Device device, TrainingDevice(spec));
  if (device.is_cpu()) return absl::OkStatus();
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(device));
  return absl::UnimplementedError(absl::StrCat(
      "resources.device: ", device.ToString(),
      " is available, but the trainer's step loop does not run on CUDA yet (the executor and "
      "kernels do); use device: cpu"));
}

}  // namespace kiln::train
