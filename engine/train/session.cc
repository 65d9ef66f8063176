// TrainingSession: construction from a spec, the optimizer step, evaluation.
#include "engine/train/session.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/device_runtime.h"
#include "engine/core/parallel.h"
#include "engine/core/rng.h"
#include "engine/dist/zero_pass.h"
#include "engine/optim/grad_utils.h"
#include "engine/train/device_select.h"
#include "engine/train/spec_config.h"
#include "kernels/cuda/device_optim.h"

namespace kiln::train {

absl::StatusOr<std::unique_ptr<TrainingSession>> TrainingSession::Create(
    const kiln::v1::JobSpec& spec, const TrainOptions& options) {
  KILN_RETURN_IF_ERROR(CheckTrainingDevice(spec));  // before any work
  std::unique_ptr<TrainingSession> s(new TrainingSession());
  KILN_ASSIGN_OR_RETURN(s->device_, RankDevice(spec, options.rank, options.world_size));
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(s->device_));
  s->spec_ = spec;
  s->options_ = options;
  if (options.threads > 0) SetNumThreads(options.threads);
  const std::string init_from =
      !options.init_from.empty() ? options.init_from : spec.model().init_from();
  KILN_ASSIGN_OR_RETURN(s->config_, ModelConfigFromSpec(spec.model(), init_from));
  KILN_ASSIGN_OR_RETURN(s->compute_, ComputeDTypeFromSpec(spec.train()));
  const auto& t = spec.train();
  s->micro_batch_ = t.micro_batch();
  s->grad_accum_ = t.has_grad_accum() ? t.grad_accum() : 1;
  s->total_steps_ = options.steps.has_value() ? *options.steps : t.steps();
  s->seed_ = t.has_seed() ? t.seed() : 1234;
  const bool sequence = s->config_.family != "mlp";
  s->seq_len_ =
      sequence ? (spec.data().has_seq_len() ? spec.data().seq_len() : s->config_.max_seq_len) : 1;
  if (s->micro_batch_ < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.micro_batch: ", s->micro_batch_, " must be at least 1"));
  }
  if (s->grad_accum_ < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.grad_accum: ", s->grad_accum_, " must be at least 1"));
  }
  if (s->total_steps_ < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.steps: ", s->total_steps_, " must be at least 1"));
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " of world size ",
                                                   options.world_size, " is not valid"));
  }

  // Data: this rank reads its contiguous block of every global batch.
  if (sequence) {
    if (spec.data().train().empty()) {
      return absl::InvalidArgumentError("data.train: a token file is required for gpt2 and llama");
    }
    KILN_ASSIGN_OR_RETURN(auto train,
                          data::TokenFile::Open(spec.data().train(), s->config_.vocab_size));
    s->train_file_ = std::move(train);
    const int global_rows = s->micro_batch_ * options.world_size;
    KILN_RETURN_IF_ERROR(data::BatchLoader::CheckFits(*s->train_file_, s->seq_len_, global_rows,
                                                      spec.data().shuffle()));
    s->train_loader_ = std::make_unique<data::BatchLoader>(
        s->train_file_, s->seq_len_, global_rows, options.rank * s->micro_batch_, s->micro_batch_,
        spec.data().shuffle(), s->seed_);
    if (!spec.data().val().empty()) {
      KILN_ASSIGN_OR_RETURN(auto val,
                            data::TokenFile::Open(spec.data().val(), s->config_.vocab_size));
      KILN_RETURN_IF_ERROR(
          data::BatchLoader::CheckFits(*val, s->seq_len_, global_rows, /*shuffle=*/false));
      s->val_file_ = std::move(val);
    }
  }

  nn::GraphOptions go;
  go.batch = s->micro_batch_;
  go.seq_len = s->seq_len_;
  go.compute = s->compute_;
  go.backward = true;
  KILN_ASSIGN_OR_RETURN(nn::ModelGraph model, nn::BuildModel(s->config_, go));
  s->params_ = model.params;
  s->inputs_ = model.inputs;
  s->targets_ = model.targets;
  s->rng_ = model.rng;
  s->loss_ = model.loss;
  s->loss_seed_ = model.backward.loss_seed;
  std::vector<bool> has_grad;
  for (graph::ValueId g : model.graph.grads()) has_grad.push_back(g != graph::kNoValue);
  s->stage_ = spec.parallel().zero_stage();
  s->distributed_ = options.world_size > 1 || s->stage_ > 0;
  if (s->distributed_) KILN_RETURN_IF_ERROR(s->SetUpDistributed(model.graph));
  graph::ExecutorOptions eo;
  eo.planner = s->planner_;
  eo.profile = options.profile;
  eo.device = s->device_;
  eo.device_graphs = true;  // Note [Device graphs], Note [Graph segments]
  KILN_ASSIGN_OR_RETURN(s->exec_, graph::Executor::Create(std::move(model.graph), eo));
  s->stage_inputs_ = std::make_unique<StagedTensor>(s->exec_->value(s->inputs_));
  s->stage_targets_ = std::make_unique<StagedTensor>(s->exec_->value(s->targets_));
  s->stage_loss_seed_ = std::make_unique<StagedTensor>(s->exec_->value(s->loss_seed_));
  if (s->rng_ != graph::kNoValue) {
    KILN_CHECK(s->exec_->value(s->rng_).dtype() == DType::kI64) << "the RNG seed value is (2) i64";
    s->stage_rng_ = std::make_unique<StagedTensor>(s->exec_->value(s->rng_));
  }
  for (int micro = 0; micro < s->grad_accum_; ++micro) {
    s->stage_losses_.push_back(std::make_unique<StagedTensor>(s->exec_->value(s->loss_)));
  }
  if (s->distributed_ && s->stage_ <= 1) {
    TrainingSession* self = s.get();
    // Each bucket's reduction starts when its last gradient is final: with device graphs a recorded
    // segment ends there (Note [Graph segments]).
    std::vector<std::vector<int>> buckets;
    for (const dist::Bucket& b : s->zero_->layout().buckets) buckets.push_back(b.params);
    s->exec_->SetGradReadyCallback(
        [self](int param) {
          if (self->reduce_now_) self->zero_->OnGradReady(param, self->exec_->flat_grads());
        },
        buckets);
  }

  // Optimizer segments: one per graph parameter, at its offset in the flat buffers.
  const graph::MemoryPlan& plan = s->exec_->memory_plan();
  std::vector<optim::Segment> segments;
  for (size_t p = 0; p < plan.param_offset.size(); ++p) {
    optim::Segment seg;
    seg.offset = plan.param_offset[p];
    seg.length = plan.param_numel[p];
    seg.has_grad = has_grad[p];
    for (const nn::ParamEntry& e : s->params_.entries) {
      if (e.graph_param == static_cast<int>(p)) seg.weight_decay = e.weight_decay;
    }
    segments.push_back(seg);
  }
  ShardSpec shard;
  if (s->stage_ >= 1) {
    shard.ranges = s->zero_->layout().OwnedRanges(options.rank);
  } else {
    shard.ranges = {{0, plan.param_elements}};
  }
  shard.params = s->stage_ >= 3 ? s->zero_->param_shard() : s->exec_->flat_params();
  shard.params_by_shard = s->stage_ >= 3;
  shard.grads_by_shard = s->stage_ >= 2;
  KILN_ASSIGN_OR_RETURN(s->shard_,
                        OptimizerShard::Create(OptimizerConfigFromSpec(t), segments, shard));
  s->schedule_ = ScheduleFromSpec(t, s->total_steps_);
  KILN_RETURN_IF_ERROR(optim::ValidateSchedule(s->schedule_));
  s->scaler_ = optim::LossScaler(s->compute_ == DType::kF16);
  return s;
}

absl::StatusOr<Tensor> TrainingSession::FullWeights() const {
  Tensor full = Tensor::Zeros({exec_->memory_plan().param_elements}, DType::kF32);
  if (stage_ >= 1 && options_.world_size > 1) {
    KILN_RETURN_IF_ERROR(GatherFullWeights(full));
  } else {
    shard_->CopyMasterInto(full);
  }
  return full;
}

std::vector<Tensor> TrainingSession::ParamViews(const Tensor& full) const {
  const graph::MemoryPlan& plan = exec_->memory_plan();
  std::vector<Tensor> views;
  for (size_t p = 0; p < plan.param_offset.size(); ++p) {
    const Shape& shape = exec_->graph().value(exec_->graph().params()[p]).type.shape;
    views.push_back(Tensor::FromStorage(full.storage(), shape, DType::kF32,
                                        full.offset() + plan.param_offset[p]));
  }
  return views;
}

// Batches are made in host memory (pinned when the executor is on a GPU) and uploaded to the bound
// tensors without waiting for the device (Note [Pinned staging]).
void TrainingSession::FillBatch(data::BatchLoader* loader, StagedTensor& x, StagedTensor& y,
                                int64_t batch_index) {
  const Tensor& host_x = x.Host();  // (B, T) i32 tokens, or (B, d) f32 synthetic features
  const Tensor& host_y = y.Host();  // (B, T) i32, or (B) synthetic targets
  if (config_.family == "mlp") {
    FillSyntheticBatch(host_x, host_y, batch_index);
  } else {
    loader->Next(host_x.data<int32_t>(), host_y.data<int32_t>());
  }
  x.Upload();
  y.Upload();
}

// Note [The MLP's synthetic task]
// The mlp family trains on data generated from the seed, so tests and demos need no files: features
// x ~ N(0, 1) drawn per (seed, batch, row), and targets from a fixed random teacher — the argmax of
// W x for classification, or sum(sin(x)) for regression. Any rank count sees the same global batch.
void TrainingSession::FillSyntheticBatch(const Tensor& x, const Tensor& targets,
                                         int64_t batch_index) {
  const int rows = static_cast<int>(x.size(0)), d = static_cast<int>(x.size(1));
  const int classes = config_.vocab_size;
  for (int r = 0; r < rows; ++r) {
    const int64_t global_row =
        batch_index * micro_batch_ * options_.world_size + options_.rank * micro_batch_ + r;
    float* xr = x.data<float>() + static_cast<int64_t>(r) * d;
    for (int j = 0; j < d; j += 2) {
      uint32_t w[4];
      Philox::Generate(seed_, (static_cast<uint64_t>(global_row) << 20) | j, w);
      const float u1 = std::max(Philox::ToUniform(w[0]), 1e-7f), u2 = Philox::ToUniform(w[1]);
      const float radius = std::sqrt(-2.0f * std::log(u1));
      xr[j] = radius * std::cos(6.2831853f * u2);
      if (j + 1 < d) xr[j + 1] = radius * std::sin(6.2831853f * u2);
    }
    if (classes > 1) {
      int best = 0;
      float best_score = -1e30f;
      for (int c = 0; c < classes; ++c) {
        float score = 0;
        for (int j = 0; j < d; ++j) {
          uint32_t w[4];
          Philox::Generate(seed_ ^ 0x7eac4e5ull, static_cast<uint64_t>(c) * d + j, w);
          score += (Philox::ToUniform(w[0]) - 0.5f) * xr[j];
        }
        if (score > best_score) {
          best_score = score;
          best = c;
        }
      }
      targets.data<int32_t>()[r] = best;
    } else {
      float y = 0;
      for (int j = 0; j < d; ++j) y += std::sin(xr[j]);
      targets.data<float>()[r] = y;
    }
  }
}

absl::Status TrainingSession::IssueMicroBatch(int micro, bool reduce) {
  const int64_t batch_index = step_ * grad_accum_ + micro;
  FillBatch(train_loader_.get(), *stage_inputs_, *stage_targets_, batch_index);
  stage_loss_seed_->Host().Fill(static_cast<float>(scaler_.scale() / grad_accum_));
  stage_loss_seed_->Upload();
  if (stage_rng_ != nullptr) {
    int64_t* seed_step = stage_rng_->Host().data<int64_t>();  // (2) i64
    seed_step[0] = static_cast<int64_t>(seed_);
    seed_step[1] = batch_index;
    stage_rng_->Upload();
  }
  if (distributed_) {
    zero_->BeginMicroBatch(micro);
    reduce_now_ = reduce;
  }
  exec_->Run();
  if (distributed_ && (stage_ >= 2 || reduce_now_)) KILN_RETURN_IF_ERROR(zero_->FinishBackward());
  return absl::OkStatus();
}

absl::StatusOr<double> TrainingSession::RunMicroBatch(int micro, bool reduce) {
  KILN_RETURN_IF_ERROR(IssueMicroBatch(micro, reduce));
  return static_cast<double>(exec_->value(loss_).Item());
}

absl::StatusOr<StepMetrics> TrainingSession::Step() {
  const auto start = std::chrono::steady_clock::now();
  if (exec_->flat_grads().defined()) exec_->ZeroGrads();
  for (int micro = 0; micro < grad_accum_; ++micro) {
    // ZeRO 0/1 communicate on the last micro-batch only; ZeRO 2/3 on every one.
    KILN_RETURN_IF_ERROR(IssueMicroBatch(micro, micro == grad_accum_ - 1));
    stage_losses_[micro]->Download();  // read below, after the step's one wait for the device
  }
  StepMetrics m;
  // ZeRO 2/3 hold only this rank's reduced chunks; otherwise the whole (reduced) buffer.
  const Tensor& grads = stage_ >= 2 ? zero_->grad_shard() : exec_->flat_grads();
  bool finite = true;
  double squared_norm = 0;
  if (grads.device().is_cpu()) {
    finite = !scaler_.enabled() || optim::AllFinite(grads);
    squared_norm = finite ? optim::SquaredNorm(grads) : INFINITY;
  } else {
    const kernels::cuda::GradStats stats = grad_stats_.Compute(grads);  // waits for the device
    finite = !scaler_.enabled() || stats.all_finite;
    squared_norm = finite ? stats.squared_norm : INFINITY;
  }
  // On a GPU the losses' copies finished before the statistics did: Host() does not wait.
  double loss_sum = 0;
  for (const auto& loss : stage_losses_) loss_sum += loss->Host().Item();
  m.loss = loss_sum / grad_accum_;
  // Data parallel gradients hold sums over ranks: the mean divides by the world size.
  if (distributed_) KILN_RETURN_IF_ERROR(ReduceAcrossRanks(m, finite, squared_norm));
  const double inv_scale = 1.0 / scaler_.scale() / options_.world_size;
  m.grad_norm = finite ? std::sqrt(squared_norm) * inv_scale : INFINITY;
  m.loss_scale = scaler_.scale();
  m.lr = optim::LearningRate(schedule_, step_);
  const bool apply = scaler_.Update(finite);
  if (!std::isfinite(m.loss) || (!scaler_.enabled() && !std::isfinite(m.grad_norm))) {
    return absl::InternalError(absl::StrCat("training diverged at step ", step_ + 1, ": loss ",
                                            m.loss, ", gradient norm ", m.grad_norm,
                                            " (lower the learning rate or use fp32)"));
  }
  if (apply) {
    const float factor =
        static_cast<float>(inv_scale * optim::ClipFactor(m.grad_norm, spec_.train().grad_clip()));
    shard_->Step(grads, factor, static_cast<float>(m.lr));
    if (distributed_ && (stage_ == 1 || stage_ == 2)) {
      KILN_RETURN_IF_ERROR(zero_->GatherUpdatedParams(exec_->flat_params()));
    }
  }
  m.skipped = !apply;
  ++step_;
  m.step = step_;
  m.total_steps = total_steps_;
  m.step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double tokens =
      static_cast<double>(micro_batch_) * seq_len_ * grad_accum_ * options_.world_size;
  m.tokens_per_s = tokens / (m.step_ms / 1e3);
  return m;
}

absl::StatusOr<std::unique_ptr<graph::Executor>> TrainingSession::BuildForwardExecutor(
    int batch, int seq_len, bool logits) {
  nn::GraphOptions go;
  go.batch = batch;
  go.seq_len = seq_len;
  go.compute = compute_;
  go.backward = false;
  go.logits_output = logits;
  KILN_ASSIGN_OR_RETURN(nn::ModelGraph model, nn::BuildModel(config_, go));
  if (stage_ >= 3) KILN_RETURN_IF_ERROR(dist::ApplyZeroPass(model.graph, zero_));
  if (logits) {
    sample_inputs_ = model.inputs;
    sample_logits_ = model.logits;
  } else {
    eval_inputs_ = model.inputs;
    eval_targets_ = model.targets;
    eval_loss_ = model.loss;
  }
  graph::ExecutorOptions eo;
  eo.planner = planner_;
  eo.device = device_;
  eo.device_graphs = true;
  if (stage_ < 3) eo.shared_params = exec_->params_storage();
  return graph::Executor::Create(std::move(model.graph), eo);
}

absl::StatusOr<double> TrainingSession::Evaluate() {
  const bool synthetic = config_.family == "mlp";
  if (!synthetic && val_file_ == nullptr) {
    return absl::FailedPreconditionError("no validation data (data.val is empty)");
  }
  if (eval_exec_ == nullptr) {
    KILN_ASSIGN_OR_RETURN(eval_exec_, BuildForwardExecutor(micro_batch_, seq_len_, false));
  }
  const int eval_steps = spec_.train().has_eval_steps() ? spec_.train().eval_steps() : 10;
  std::unique_ptr<data::BatchLoader> loader;
  if (!synthetic) {
    loader = std::make_unique<data::BatchLoader>(
        val_file_, seq_len_, micro_batch_ * options_.world_size, options_.rank * micro_batch_,
        micro_batch_, false, seed_);
  }
  StagedTensor x(eval_exec_->value(eval_inputs_)), y(eval_exec_->value(eval_targets_));
  double total = 0;
  for (int i = 0; i < eval_steps; ++i) {
    // Synthetic validation batches come from far beyond any training batch index.
    FillBatch(loader.get(), x, y, synthetic ? (int64_t{1} << 40) + i : i);
    eval_exec_->Run();
    total += eval_exec_->value(eval_loss_).Item();
  }
  if (distributed_) {
    const Tensor sum = Tensor::FromFloats({static_cast<float>(total)}, {1});
    KILN_RETURN_IF_ERROR(zero_->AllReduceSum(sum));
    KILN_RETURN_IF_ERROR(zero_->failure());
    total = sum.Item() / options_.world_size;
  }
  return total / eval_steps;
}

}  // namespace kiln::train
