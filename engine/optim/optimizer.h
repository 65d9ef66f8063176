// Optimizers over flat f32 buffers: AdamW (as torch.optim.AdamW: decoupled decay, bias correction)
// and SGD with momentum. They update a list of segments — (offset, length) ranges of the flat
// parameter buffer with a weight-decay flag — so the same code updates a whole model or a ZeRO
// shard. State tensors (moments) cover exactly the segments' elements, in segment order.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace kiln::optim {

struct Segment {
  int64_t offset = 0;  // into the flat parameter/gradient buffers (elements)
  int64_t length = 0;
  bool weight_decay = true;
  bool has_grad = true;  // false: skipped entirely (torch skips parameters whose grad is None)
};

struct OptimizerConfig {
  std::string name = "adamw";  // adamw | sgd
  float lr = 3e-4f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  float momentum = 0.0f;  // sgd
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update with learning rate `lr` at 1-based step `step`, reading grads and writing params
  // (both flat buffers indexed by Segment::offset).
  virtual void Step(float* params, const float* grads, float lr, int64_t step) = 0;
  // Named state tensors for checkpoints ("exp_avg", "exp_avg_sq" / "momentum").
  virtual std::vector<std::pair<std::string, Tensor>> State() = 0;
  // Bytes of optimizer state held (for the ZeRO memory report).
  virtual int64_t StateBytes() const = 0;
};

absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const OptimizerConfig& config,
                                                         std::vector<Segment> segments);

}  // namespace kiln::optim
