// The weights an optimizer owns and updates: a range [begin, end) of the model's flat parameter
// buffer (all of it without ZeRO, this rank's shard with it), its f32 master copy and optimizer
// state. See Note [Master weights].
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/optim/optimizer.h"

namespace kiln::train {

// Note [Master weights]
// In fp32 training the model's parameters are the weights the optimizer updates: the master is a
// view of the flat parameter buffer. In bf16/fp16 the model computes with a low-precision flat
// buffer while the optimizer keeps f32 master weights; each step updates the master and writes the
// rounded copy into the model's buffer in the same fused pass. Checkpoints and exports read the
// master, so nothing is lost to rounding. With ZeRO the master and the optimizer state cover only
// this rank's shard of the flat buffer (the ZeRO paper's 12 bytes per parameter, divided by N).

class OptimizerShard {
 public:
  // `segments` use offsets into the full flat buffer; they are clipped to [begin, end).
  static absl::StatusOr<std::unique_ptr<OptimizerShard>> Create(
      const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
      const Tensor& flat_params, int64_t begin, int64_t end);

  // Sets the master (and the model's copy of the whole buffer) from full f32 weights laid out like
  // the flat parameter buffer: (flat elements) f32.
  void SetWeights(const Tensor& full_f32);
  // Writes the master into [begin, end) of `full_f32`.
  void CopyMasterInto(const Tensor& full_f32) const;
  // One update of [begin, end) from the flat gradient buffer (model dtype).
  void Step(const Tensor& flat_grads, float grad_scale, float lr);

  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  int64_t applied_steps() const { return applied_steps_; }
  void set_applied_steps(int64_t n) { applied_steps_ = n; }
  const Tensor& master() const { return master_; }
  optim::Optimizer& optimizer() { return *optimizer_; }
  // Index into the optimizer state arrays of flat element `flat_offset` (-1: not in this shard).
  int64_t StateIndex(int64_t flat_offset) const;
  // Bytes this shard holds beyond the model's own buffers: master copy (when separate) and state.
  int64_t Bytes() const;

 private:
  OptimizerShard() = default;
  std::vector<optim::Segment> segments_;  // shard-relative
  std::vector<int64_t> state_base_;       // per segment: first index into the state arrays
  Tensor flat_params_;                    // the model's buffer (compute dtype)
  Tensor master_;                         // (end - begin) f32
  bool separate_master_ = false;
  std::unique_ptr<optim::Optimizer> optimizer_;
  int64_t begin_ = 0, end_ = 0, applied_steps_ = 0;
};

}  // namespace kiln::train
