// Gradient utilities on flat f32 buffers: the squared L2 norm (deterministic: fixed-size chunks
// summed in double, combined in a fixed order), scaling (clipping, un-scaling), and the inf/nan
// check the fp16 loss scaler needs.
#pragma once

#include <cstdint>

namespace kiln::optim {

double SquaredNorm(const float* g, int64_t n);
void ScaleInPlace(float* g, int64_t n, float factor);
bool AllFinite(const float* g, int64_t n);

// torch.nn.utils.clip_grad_norm_: factor = min(1, max_norm / (norm + 1e-6)).
inline float ClipFactor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  const double f = max_norm / (norm + 1e-6);
  return static_cast<float>(f < 1.0 ? f : 1.0);
}

}  // namespace kiln::optim
