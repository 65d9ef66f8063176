// A training session: one model, its planned executor, optimizer, data and schedule — the state
// that a checkpoint captures. Step() is the whole of one optimizer step and reads top to bottom.
// RunTraining (trainer.cc) drives a session; tests drive it directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/data/batch_loader.h"
#include "engine/dist/communicator.h"
#include "engine/dist/zero_runtime.h"
#include "engine/graph/executor.h"
#include "engine/nn/model.h"
#include "engine/optim/loss_scaler.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/train/optimizer_shard.h"
#include "engine/train/staged_tensor.h"
#include "engine/train/trainer.h"
#include "kiln/v1/job.pb.h"

namespace kiln::train {

class TrainingSession {
 public:
  // Validates the spec against the engine, opens the data, builds and plans the graph. Weights
  // are uninitialized until InitializeWeights or Resume.
  static absl::StatusOr<std::unique_ptr<TrainingSession>> Create(const kiln::v1::JobSpec& spec,
                                                                 const TrainOptions& options);

  // Fresh initialization from the seed, or the weights of model.init_from / options.init_from.
  absl::Status InitializeWeights();
  // Restores weights, optimizer state, step, data position and loss scale from a checkpoint (or
  // the newest one in a run directory).
  absl::Status Resume(const std::string& path);

  // One optimizer step (grad_accum micro-batches). Returns this step's metrics.
  absl::StatusOr<StepMetrics> Step();
  // One micro-batch's forward and backward on the next batch of this step (no update): with
  // `reduce`, ZeRO 0/1 reduce gradient buckets as backward finishes them and wait for them
  // (ZeRO 2/3 always do). Returns the micro-batch's local loss. Step is made of these; the overlap
  // benchmark times them with and without reduction.
  absl::StatusOr<double> RunMicroBatch(int micro, bool reduce);
  dist::ZeroRuntime* zero_runtime() const { return zero_.get(); }
  // Mean loss over eval_steps batches of the validation file (from its start).
  absl::StatusOr<double> Evaluate();
  // Commits a checkpoint for the current step; returns its directory.
  absl::StatusOr<std::string> SaveCheckpoint();
  // The trained weights with Hugging Face names (and config.json beside them), written by rank 0;
  // every rank must call it.
  absl::Status SaveFinal(const std::string& path);

  // Continues `prompt` by `new_tokens` tokens: greedy when top_k <= 1, else top-k sampling.
  absl::StatusOr<std::vector<int32_t>> Generate(const std::vector<int32_t>& prompt, int new_tokens,
                                                int top_k, float temperature, uint64_t seed);

  // Per-rank bytes of model states and buffers (compare with the ZeRO paper's formulas).
  struct MemoryReport {
    int64_t parameters = 0;   // the model's weights as this rank holds them
    int64_t gradients = 0;
    int64_t optimizer = 0;    // f32 master weights and moments
    int64_t buffers = 0;      // communication staging and receive buffers
    int64_t activations = 0;  // the planned arena (ZeRO-3 gathered weights live here)
    int64_t num_params = 0;   // parameters counted without padding (the paper's psi)
  };
  MemoryReport Memory() const;

  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  bool has_validation() const { return val_file_ != nullptr; }
  const nn::ModelConfig& model_config() const { return config_; }
  graph::Executor& executor() { return *exec_; }
  const nn::ParamTable& param_table() const { return params_; }
  // The model's weights in f32 (the master copy), laid out like the flat parameter buffer. Under
  // ZeRO every rank must call it (it gathers the shards).
  absl::StatusOr<Tensor> FullWeights() const;
  // Per graph parameter, an f32 view into `full` (a FullWeights-shaped tensor).
  std::vector<Tensor> ParamViews(const Tensor& full) const;

 private:
  TrainingSession() = default;
  // Writes batch `batch_index` into x's and y's host buffers and uploads them.
  void FillBatch(data::BatchLoader* loader, StagedTensor& x, StagedTensor& y, int64_t batch_index);
  // RunMicroBatch without reading the loss back: fills, uploads and issues the micro-batch.
  absl::Status IssueMicroBatch(int micro, bool reduce);
  // Fills host tensors x (B, d_in) and targets (B) with the synthetic task's batch.
  void FillSyntheticBatch(const Tensor& x, const Tensor& targets, int64_t batch_index);
  absl::StatusOr<std::unique_ptr<graph::Executor>> BuildForwardExecutor(int batch, int seq_len,
                                                                        bool logits);
  std::string StateJson() const;
  absl::Status SetUpDistributed(graph::Graph& graph);
  // Data parallelism: averages the loss over ranks and agrees on finiteness and (ZeRO 2/3, whose
  // ranks each hold a shard) the squared gradient norm.
  absl::Status ReduceAcrossRanks(StepMetrics& m, bool& finite, double& squared_norm);
  // ZeRO: every rank's master ranges into `full` (a collective).
  absl::Status GatherFullWeights(const Tensor& full) const;
  // Each rank's optimizer state, by range, for sharded checkpoints.
  absl::Status WriteOptimizerShard(const std::string& dir) const;
  absl::Status ReadOptimizerShards(const std::string& dir, const std::string& state_json);
  bool rank0() const { return options_.rank == 0; }

  kiln::v1::JobSpec spec_;
  TrainOptions options_;
  nn::ModelConfig config_;
  DType compute_ = DType::kF32;
  Device device_;  // resources.device: where the executors, gradients and optimizer state live
  int micro_batch_ = 1, seq_len_ = 1, grad_accum_ = 1;
  int64_t total_steps_ = 0;
  nn::ParamTable params_;
  graph::ValueId inputs_ = graph::kNoValue, targets_ = graph::kNoValue, rng_ = graph::kNoValue;
  graph::ValueId loss_ = graph::kNoValue, loss_seed_ = graph::kNoValue;
  std::unique_ptr<graph::Executor> exec_;
  std::unique_ptr<OptimizerShard> shard_;
  // Note [Pinned staging]: the host twins of the values a step writes (inputs, targets, the loss
  // seed, the RNG seed when the graph has dropout) and of the loss, one per micro-batch, read
  // after the step's one wait for the device (the gradient statistics).
  std::unique_ptr<StagedTensor> stage_inputs_, stage_targets_, stage_loss_seed_, stage_rng_;
  std::vector<std::unique_ptr<StagedTensor>> stage_losses_;
  kernels::cuda::GradStatsReducer grad_stats_;  // gradients on a GPU
  graph::PlannerOptions planner_;
  // Data parallelism (world > 1 or ZeRO): see engine/dist/zero_runtime.h.
  bool distributed_ = false;
  int stage_ = 0;
  std::unique_ptr<dist::Store> owned_store_;
  std::unique_ptr<dist::Communicator> owned_comm_;
  dist::Communicator* comm_ = nullptr;
  std::shared_ptr<dist::ZeroRuntime> zero_;
  bool reduce_now_ = false;  // ZeRO 0/1: reduce buckets in this micro-batch (the last one)
  optim::ScheduleConfig schedule_;
  optim::LossScaler scaler_{false};
  std::shared_ptr<const data::TokenFile> train_file_, val_file_;
  std::unique_ptr<data::BatchLoader> train_loader_;
  // Evaluation and sampling graphs share the training executor's parameters.
  std::unique_ptr<graph::Executor> eval_exec_, sample_exec_;
  graph::ValueId eval_inputs_, eval_targets_, eval_loss_, sample_inputs_, sample_logits_;
  int64_t step_ = 0;  // optimizer steps taken (applied or skipped by the fp16 loss scaler)
  uint64_t seed_ = 1234;
};

}  // namespace kiln::train
