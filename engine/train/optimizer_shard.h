// The weights one rank's optimizer owns and updates: a list of ranges of the model's flat
// parameter buffer (all of it without ZeRO; this rank's chunk of every bucket with it), their f32
// master copy and the optimizer state. See Note [Master weights].
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/optim/optimizer.h"
#include "kernels/cuda/device_optim.h"

namespace kiln::train {

// Note [Master weights]
// In fp32 training the model's parameters are the weights the optimizer updates: the master is a
// view of the model's buffer. In bf16/fp16 the model computes with a low-precision buffer while
// the optimizer keeps f32 master weights; each step updates the master and writes the rounded copy
// into the model's buffer in the same fused pass. Checkpoints and exports read the master, so
// nothing is lost to rounding. With ZeRO the master and the optimizer state cover only this rank's
// ranges (the ZeRO paper's 12 bytes per parameter, divided by N).

struct ShardSpec {
  std::vector<std::pair<int64_t, int64_t>> ranges;  // flat [begin, end), in flat order
  Tensor params;                 // the model's weights for these ranges (model dtype)
  bool params_by_shard = false;  // params indexed by position in the shard, not by flat offset
  bool grads_by_shard = false;   // Step's gradients likewise (ZeRO 2/3 reduced chunks)
};

class OptimizerShard {
 public:
  // `segments` use offsets into the full flat buffer; they are clipped to the ranges.
  static absl::StatusOr<std::unique_ptr<OptimizerShard>> Create(
      const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
      ShardSpec spec);

  // Sets the master and the model's copy from full f32 weights in flat layout: (flat elements).
  void SetWeights(const Tensor& full_f32);
  // Writes the master into its ranges of `full_f32`.
  void CopyMasterInto(const Tensor& full_f32) const;
  // One update from `grads` (model dtype; flat-indexed, or shard-indexed per the spec).
  void Step(const Tensor& grads, float grad_scale, float lr);

  const ShardSpec& spec() const { return spec_; }
  int num_ranges() const { return static_cast<int>(ranges_.size()); }
  std::pair<int64_t, int64_t> range(int r) const { return spec_.ranges[r]; }
  int64_t shard_offset(int r) const { return ranges_[r].shard_begin; }
  // The optimizer state tensors of range r (each (range length) f32, on the parameters' device).
  std::vector<std::pair<std::string, Tensor>> State(int r);
  // The f32 master of range r.
  Tensor Master(int r) const;
  // The whole master as one shard-ordered tensor when it is stored that way (bf16/fp16, or ZeRO-3);
  // undefined when the master is a set of views into the model's flat buffer.
  const Tensor& master_concat() const { return master_; }
  int64_t applied_steps() const { return applied_steps_; }
  void set_applied_steps(int64_t n) { applied_steps_ = n; }
  // Bytes held beyond the model's own buffers: a separate master copy and the optimizer state.
  int64_t Bytes() const;

 private:
  struct Range {
    int64_t shard_begin = 0;
    int64_t length = 0;
    std::unique_ptr<optim::Optimizer> optimizer;                      // parameters on the CPU
    std::unique_ptr<kernels::cuda::DeviceAdamW> device_optimizer;     // parameters on a GPU
  };
  OptimizerShard() = default;
  static absl::StatusOr<std::unique_ptr<kernels::cuda::DeviceAdamW>> MakeDeviceOptimizer(
      const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
      int64_t span, Device device);
  int64_t ParamIndex(int r) const {
    return spec_.params_by_shard ? ranges_[r].shard_begin : spec_.ranges[r].first;
  }

  ShardSpec spec_;
  std::vector<Range> ranges_;
  Tensor master_;  // (shard elements) f32, when separate
  bool separate_master_ = false;
  int64_t applied_steps_ = 0;
};

}  // namespace kiln::train
