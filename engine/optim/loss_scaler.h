// Dynamic loss scaling for fp16 (as torch.cuda.amp.GradScaler): the loss gradient is multiplied by
// `scale`; a step whose gradients overflow is skipped and the scale halves; after `growth_interval`
// clean steps it doubles. Its state is saved in checkpoints and agreed across data-parallel ranks.
#pragma once

#include <cstdint>

namespace kiln::optim {

struct LossScalerState {
  double scale = 65536.0;
  int64_t clean_steps = 0;
};

class LossScaler {
 public:
  explicit LossScaler(bool enabled, int64_t growth_interval = 2000)
      : enabled_(enabled), growth_interval_(growth_interval) {
    if (!enabled_) state_.scale = 1.0;
  }
  bool enabled() const { return enabled_; }
  double scale() const { return state_.scale; }
  // Records whether this step's gradients were finite; returns true when the step may be applied.
  bool Update(bool finite);
  const LossScalerState& state() const { return state_; }
  void set_state(const LossScalerState& s) { state_ = s; }

 private:
  bool enabled_;
  int64_t growth_interval_;
  LossScalerState state_;
};

}  // namespace kiln::optim
