// The device a job trains on (resources.device) and the check that runs before any work: a spec
// that asks for a GPU this process cannot use fails at once with one line naming the driver's
// reason ("no CUDA device available: ..."), which kiln-train turns into exit code 2.
#pragma once

#include "absl/status/statusor.h"
#include "engine/core/device.h"
#include "kiln/v1/job.pb.h"

namespace kiln::train {

// resources.device parsed ("cpu" when unset).
absl::StatusOr<Device> TrainingDevice(const kiln::v1::JobSpec& spec);

// The device of `rank` of `world`: "cuda" spreads ranks over the visible GPUs (rank modulo their
// count: under kilnd, which gives each worker one GPU through CUDA_VISIBLE_DEVICES, always GPU 0;
// under kiln-train --nproc, GPU r for rank r); "cuda:N" names one GPU and so one rank.
// InvalidArgument for "cuda:N" with world > 1.
absl::StatusOr<Device> RankDevice(const kiln::v1::JobSpec& spec, int rank, int world);

// OK for cpu. For cuda: FailedPrecondition "no CUDA device available: <reason>" without a usable
// device (see Note [Training on CUDA] in device_select.cc).
absl::Status CheckTrainingDevice(const kiln::v1::JobSpec& spec);

}  // namespace kiln::train
