// Loss-scale back-off and growth.
#include "engine/optim/loss_scaler.h"

namespace kiln::optim {

bool LossScaler::Update(bool finite) {
  if (!enabled_) return finite;
  if (!finite) {
    state_.scale *= 0.5;
    state_.clean_steps = 0;
    return false;
  }
  if (++state_.clean_steps >= growth_interval_) {
    state_.scale *= 2.0;
    state_.clean_steps = 0;
  }
  return true;
}

}  // namespace kiln::optim
