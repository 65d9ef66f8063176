// Learning-rate schedules (step s counts from 0): linear warm-up lr*(s+1)/warmup for s < warmup,
// then constant, linear or cosine decay from lr to min_lr over the remaining steps.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kiln::optim {

struct ScheduleConfig {
  std::string name = "constant";  // constant | linear | cosine
  int64_t warmup_steps = 0;
  double lr = 3e-4;
  double min_lr = 0;
  int64_t total_steps = 1;
};

absl::Status ValidateSchedule(const ScheduleConfig& config);
double LearningRate(const ScheduleConfig& config, int64_t step);

}  // namespace kiln::optim
