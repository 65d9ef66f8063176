// Gradient utilities on flat buffers of any float dtype: the squared L2 norm (deterministic:
// fixed-size chunks summed in double, combined in a fixed order) and the inf/nan check the fp16
// loss scaler needs. Scaling is fused into the optimizer step (StepArgs::grad_scale).
#pragma once

#include <cstdint>

#include "engine/core/tensor.h"

namespace kiln::optim {

double SquaredNorm(const Tensor& flat);
bool AllFinite(const Tensor& flat);

// torch.nn.utils.clip_grad_norm_: factor = min(1, max_norm / (norm + 1e-6)).
inline float ClipFactor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  const double f = max_norm / (norm + 1e-6);
  return static_cast<float>(f < 1.0 ? f : 1.0);
}

}  // namespace kiln::optim
