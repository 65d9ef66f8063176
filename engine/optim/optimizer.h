// Optimizers over flat f32 buffers: AdamW (as torch.optim.AdamW: decoupled decay, bias correction)
// and SGD with momentum. They update a list of segments — (offset, length) ranges of a span of the
// flat parameter buffer, with a weight-decay flag — so the same code updates a whole model or a
// ZeRO shard. State tensors (moments) are laid out like the span, so state element i belongs to
// span element i (gaps between segments — alignment padding — stay zero).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace kiln::optim {

struct Segment {
  int64_t offset = 0;  // into the arrays StepArgs points at (elements)
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

// One update. `master` (f32) holds the weights being optimized; `grads` (any float dtype) the
// gradients, each multiplied by grad_scale first (loss-scale removal and clipping, fused); when
// `params` is set, the updated weights are also written there in param_dtype (the low-precision
// copy the model computes with). All three are indexed by Segment::offset.
struct StepArgs {
  float* master = nullptr;
  const void* grads = nullptr;
  DType grad_dtype = DType::kF32;
  void* params = nullptr;
  DType param_dtype = DType::kF32;
  float grad_scale = 1.0f;
  float lr = 0.0f;
  int64_t step = 1;  // 1-based count of applied updates
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void Step(const StepArgs& args) = 0;
  // Named state tensors for checkpoints ("exp_avg", "exp_avg_sq" / "momentum").
  virtual std::vector<std::pair<std::string, Tensor>> State() = 0;
  // Bytes of optimizer state held (for the ZeRO memory report).
  virtual int64_t StateBytes() const = 0;
};

// `span` is the length of the range the segments lie in (every segment within [0, span)).
absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const OptimizerConfig& config,
                                                         std::vector<Segment> segments,
                                                         int64_t span);

}  // namespace kiln::optim
