// Learning-rate schedules.
#include "engine/optim/schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kiln::optim {

absl::Status ValidateSchedule(const ScheduleConfig& c) {
  if (c.name != "constant" && c.name != "linear" && c.name != "cosine") {
    return absl::InvalidArgumentError(absl::StrCat("train.lr_schedule.name: \"", c.name,
                                                   "\" is not one of constant, linear, cosine"));
  }
  if (c.warmup_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat("train.lr_schedule.warmup_steps: ",
                                                   c.warmup_steps, " must not be negative"));
  }
  return absl::OkStatus();
}

double LearningRate(const ScheduleConfig& c, int64_t step) {
  if (step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.name == "constant") return c.lr;
  const int64_t decay_steps = c.total_steps - c.warmup_steps;
  if (decay_steps <= 0) return c.lr;
  // As nanoGPT/llm.c: progress runs over [0, 1) across the decay steps.
  const double progress =
      std::min(1.0, static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps));
  if (c.name == "linear") return c.lr - (c.lr - c.min_lr) * progress;
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace kiln::optim
