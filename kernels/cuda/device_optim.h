// The optimizer side of training on a GPU: the fused AdamW of optim.cu over flat device buffers
// (f32 master weights and moments on the device, gradients in any float type, the low-precision
// weight copy written in the same pass) and the gradient statistics (squared L2 norm in f64 and
// all-finite) that clipping and fp16 loss scaling read. Same arithmetic as engine/optim's AdamW.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "kernels/cuda/adam_table.h"

namespace kiln::kernels::cuda {

struct DeviceAdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
};

class DeviceAdamW {
 public:
  // Moments (span) f32, zero-initialized on `device`, laid out as optim's AdamW lays them out
  // (Note [Device AdamW state layout] in adam_table.h); segments index [0, span).
  static absl::StatusOr<std::unique_ptr<DeviceAdamW>> Create(const DeviceAdamWConfig& config,
                                                             std::vector<DeviceSegment> segments,
                                                             int64_t span, Device device);
  ~DeviceAdamW();
  // One update (step is the 1-based count of applied updates). master: f32 (n); grads: any float
  // dtype (n); params: the model's low-precision copy (n) or undefined. All on the device.
  void Step(const Tensor& master, const Tensor& grads, const Tensor& params, float grad_scale,
            float lr, int64_t step);
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }

 private:
  DeviceAdamW() = default;
  DeviceAdamWConfig config_;
  Device device_;
  Tensor m_, v_;        // (span) f32
  Tensor chunk_table_;  // AdamChunk array in device memory (as raw bytes; Note [AdamW chunks])
  int64_t num_chunks_ = 0;
};

struct GradStats {
  double squared_norm = 0;
  bool all_finite = true;
};

// The squared L2 norm (f64) and all-finite flag of a flat gradient buffer, computed on its
// device. Deterministic: fixed blocks summed in f64, combined in block order (reduce.cu). Made
// once per training run: the device workspace is allocated on the first Compute (and again only
// for a larger buffer), so a step allocates nothing, and each Compute waits for the device
// exactly once — for its own result, which the step needs before it can clip or skip.
class GradStatsReducer {
 public:
  GradStats Compute(const Tensor& flat);  // flat: (n) any float dtype, contiguous, on a GPU

 private:
  Tensor workspace_;  // u8 on the device: the per-block partials, then the two f64 results
};

}  // namespace kiln::kernels::cuda
