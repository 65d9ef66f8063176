// OptimizerShard: master weights and the fused update over one range of the flat buffers.
#include "engine/train/optimizer_shard.h"

#include <cstring>

namespace kiln::train {

absl::StatusOr<std::unique_ptr<OptimizerShard>> OptimizerShard::Create(
    const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
    const Tensor& flat_params, int64_t begin, int64_t end) {
  KILN_CHECK(0 <= begin && begin <= end && end <= flat_params.numel());
  std::unique_ptr<OptimizerShard> s(new OptimizerShard());
  s->begin_ = begin;
  s->end_ = end;
  s->flat_params_ = flat_params;
  int64_t state = 0;
  for (const optim::Segment& full : segments) {
    const int64_t lo = std::max(full.offset, begin);
    const int64_t hi = std::min(full.offset + full.length, end);
    if (lo >= hi) continue;
    optim::Segment clipped = full;
    clipped.offset = lo - begin;
    clipped.length = hi - lo;
    s->segments_.push_back(clipped);
    s->state_base_.push_back(state);
    state += clipped.length;
  }
  s->separate_master_ = flat_params.dtype() != DType::kF32;
  s->master_ = s->separate_master_ ? Tensor::Zeros({end - begin}, DType::kF32)
                                   : flat_params.Slice(0, begin, end);
  KILN_ASSIGN_OR_RETURN(s->optimizer_, optim::MakeOptimizer(config, s->segments_));
  return s;
}

void OptimizerShard::SetWeights(const Tensor& full_f32) {
  KILN_CHECK_EQ(full_f32.numel(), flat_params_.numel());
  flat_params_.CopyFrom(full_f32);  // rounds to the model's dtype
  if (separate_master_) master_.CopyFrom(full_f32.Slice(0, begin_, end_));
}

void OptimizerShard::CopyMasterInto(const Tensor& full_f32) const {
  Tensor dst = full_f32.Slice(0, begin_, end_);
  dst.CopyFrom(master_);
}

void OptimizerShard::Step(const Tensor& flat_grads, float grad_scale, float lr) {
  optim::StepArgs a;
  a.master = master_.data<float>();
  a.grads = static_cast<const char*>(flat_grads.raw_data()) + begin_ * flat_grads.element_size();
  a.grad_dtype = flat_grads.dtype();
  if (separate_master_) {
    a.params = static_cast<char*>(flat_params_.raw_data()) + begin_ * flat_params_.element_size();
    a.param_dtype = flat_params_.dtype();
  }
  a.grad_scale = grad_scale;
  a.lr = lr;
  a.step = ++applied_steps_;
  optimizer_->Step(a);
}

int64_t OptimizerShard::StateIndex(int64_t flat_offset) const {
  const int64_t rel = flat_offset - begin_;
  for (size_t i = 0; i < segments_.size(); ++i) {
    const optim::Segment& s = segments_[i];
    if (rel >= s.offset && rel < s.offset + s.length) return state_base_[i] + rel - s.offset;
  }
  return -1;
}

int64_t OptimizerShard::Bytes() const {
  return optimizer_->StateBytes() + (separate_master_ ? master_.numel() * 4 : 0);
}

}  // namespace kiln::train
