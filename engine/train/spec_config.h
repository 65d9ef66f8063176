// Reads the engine's configuration out of a (defaulted, validated) JobSpec: the model — filled from
// a Hugging Face config.json when model.init_from is a folder holding one —, the compute precision,
// the optimizer and the learning-rate schedule.
#pragma once

#include "absl/status/statusor.h"
#include "engine/nn/model.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "kiln/v1/job.pb.h"

namespace kiln::train {

absl::StatusOr<nn::ModelConfig> ModelConfigFromSpec(const kiln::v1::ModelSpec& model,
                                                    const std::string& init_from);
absl::StatusOr<DType> ComputeDTypeFromSpec(const kiln::v1::TrainSpec& train);
optim::OptimizerConfig OptimizerConfigFromSpec(const kiln::v1::TrainSpec& train);
optim::ScheduleConfig ScheduleFromSpec(const kiln::v1::TrainSpec& train, int64_t total_steps);

}  // namespace kiln::train
