// OptimizerShard: master weights and the fused update over one rank's ranges of the flat buffers.
#include "engine/train/optimizer_shard.h"

#include "absl/strings/str_cat.h"

namespace kiln::train {

absl::StatusOr<std::unique_ptr<OptimizerShard>> OptimizerShard::Create(
    const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
    ShardSpec spec) {
  std::unique_ptr<OptimizerShard> s(new OptimizerShard());
  s->spec_ = std::move(spec);
  int64_t shard = 0;
  for (const auto& [begin, end] : s->spec_.ranges) {
    std::vector<optim::Segment> clipped;
    for (const optim::Segment& full : segments) {
      const int64_t lo = std::max(full.offset, begin);
      const int64_t hi = std::min(full.offset + full.length, end);
      if (lo >= hi) continue;
      optim::Segment c = full;
      c.offset = lo - begin;
      c.length = hi - lo;
      clipped.push_back(c);
    }
    Range r;
    r.shard_begin = shard;
    r.length = end - begin;
    if (s->spec_.params.device().is_cpu()) {
      KILN_ASSIGN_OR_RETURN(r.optimizer, optim::MakeOptimizer(config, std::move(clipped), end - begin));
    } else {
      KILN_ASSIGN_OR_RETURN(r.device_optimizer, MakeDeviceOptimizer(config, clipped, end - begin,
                                                                    s->spec_.params.device()));
    }
    s->ranges_.push_back(std::move(r));
    shard += end - begin;
  }
  s->separate_master_ = s->spec_.params.dtype() != DType::kF32;
  if (s->separate_master_) {
    s->master_ = Tensor::Zeros({shard}, DType::kF32, s->spec_.params.device());
  } else if (s->spec_.params_by_shard) {
    s->master_ = s->spec_.params;  // ZeRO-3 in f32: the parameter shard is the master
  }
  return s;
}

Tensor OptimizerShard::Master(int r) const {
  const auto [begin, end] = spec_.ranges[r];
  if (master_.defined()) {
    return master_.Slice(0, ranges_[r].shard_begin, ranges_[r].shard_begin + (end - begin));
  }
  return spec_.params.Slice(0, begin, end);
}

void OptimizerShard::SetWeights(const Tensor& full_f32) {
  if (!spec_.params_by_shard) spec_.params.CopyFrom(full_f32);  // every rank holds all weights
  for (int r = 0; r < num_ranges(); ++r) {
    const auto [begin, end] = spec_.ranges[r];
    const Tensor src = full_f32.Slice(0, begin, end);
    if (spec_.params_by_shard) {
      spec_.params.Slice(0, ParamIndex(r), ParamIndex(r) + (end - begin)).CopyFrom(src);
    }
    if (separate_master_) Master(r).CopyFrom(src);
  }
}

void OptimizerShard::CopyMasterInto(const Tensor& full_f32) const {
  for (int r = 0; r < num_ranges(); ++r) {
    const auto [begin, end] = spec_.ranges[r];
    full_f32.Slice(0, begin, end).CopyFrom(Master(r));
  }
}

void OptimizerShard::Step(const Tensor& grads, float grad_scale, float lr) {
  ++applied_steps_;
  for (int r = 0; r < num_ranges(); ++r) {
    const int64_t grad_index = spec_.grads_by_shard ? ranges_[r].shard_begin : spec_.ranges[r].first;
    if (ranges_[r].device_optimizer != nullptr) {
      const int64_t n = ranges_[r].length;
      const Tensor g = Tensor::FromStorage(grads.storage(), {n}, grads.dtype(),
                                           grads.offset() + grad_index);
      const Tensor p = separate_master_
                           ? Tensor::FromStorage(spec_.params.storage(), {n}, spec_.params.dtype(),
                                                 spec_.params.offset() + ParamIndex(r))
                           : Tensor();
      ranges_[r].device_optimizer->Step(Master(r), g, p, grad_scale, lr, applied_steps_);
      continue;
    }
    optim::StepArgs a;
    a.master = Master(r).data<float>();
    a.grads = static_cast<const char*>(grads.raw_data()) + grad_index * grads.element_size();
    a.grad_dtype = grads.dtype();
    if (separate_master_) {
      a.params = static_cast<char*>(spec_.params.raw_data()) +
                 ParamIndex(r) * spec_.params.element_size();
      a.param_dtype = spec_.params.dtype();
    }
    a.grad_scale = grad_scale;
    a.lr = lr;
    a.step = applied_steps_;
    ranges_[r].optimizer->Step(a);
  }
}

int64_t OptimizerShard::Bytes() const {
  int64_t n = separate_master_ ? master_.numel() * 4 : 0;
  for (const Range& r : ranges_) {
    n += r.optimizer != nullptr ? r.optimizer->StateBytes() : 2 * r.length * 4;
  }
  return n;
}

std::vector<std::pair<std::string, Tensor>> OptimizerShard::State(int r) {
  if (ranges_[r].device_optimizer != nullptr) {
    return {{"exp_avg", ranges_[r].device_optimizer->exp_avg()},
            {"exp_avg_sq", ranges_[r].device_optimizer->exp_avg_sq()}};
  }
  return ranges_[r].optimizer->State();
}

// Note [Optimizer on the device]: parameters on a GPU are updated by the CUDA backend's fused
// AdamW (kernels/cuda/device_optim.h), same arithmetic and state names as optim's AdamW, so
// checkpoints are interchangeable between devices.
absl::StatusOr<std::unique_ptr<kernels::cuda::DeviceAdamW>> OptimizerShard::MakeDeviceOptimizer(
    const optim::OptimizerConfig& config, const std::vector<optim::Segment>& segments,
    int64_t span, Device device) {
  if (config.name != "adamw") {
    return absl::UnimplementedError(absl::StrCat("train.optimizer.name: ", config.name,
                                                 " has no CUDA implementation (use adamw)"));
  }
  kernels::cuda::DeviceAdamWConfig c;
  c.beta1 = config.beta1;
  c.beta2 = config.beta2;
  c.eps = config.eps;
  c.weight_decay = config.weight_decay;
  std::vector<kernels::cuda::DeviceSegment> device_segments;
  for (const optim::Segment& s : segments) {
    device_segments.push_back({s.offset, s.length, s.weight_decay, s.has_grad});
  }
  return kernels::cuda::DeviceAdamW::Create(c, std::move(device_segments), span, device);
}

}  // namespace kiln::train
