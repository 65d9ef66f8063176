// The trainer's public entry point: JobSpec -> model -> plan -> step loop. kiln-train (one process)
// and kiln-worker (one rank of a kilnd job) both call RunTraining; they differ only in how they
// observe progress (TrainObserver) and how ranks find each other (TrainOptions::store).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "kiln/v1/job.pb.h"

namespace kiln::dist {
class Communicator;
class Store;
}

namespace kiln::train {

struct StepMetrics {
  int64_t step = 0;         // 1-based optimizer step just completed
  int64_t total_steps = 0;
  double loss = 0;          // training loss of this step's batch, before the update
  double lr = 0;
  double grad_norm = 0;     // global L2 norm before clipping
  double tokens_per_s = 0;  // whole job (all ranks)
  double step_ms = 0;
  double loss_scale = 1;    // fp16 dynamic loss scale; 1 otherwise
  bool skipped = false;     // fp16 overflow: the update was skipped
  std::optional<double> val_loss;
};

// Receives progress; every method runs on the training thread and should return quickly.
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void OnStart(int64_t start_step, int64_t total_steps) {}
  virtual void OnStep(const StepMetrics& metrics) {}
  virtual void OnEval(int64_t step, double val_loss) {}
  // A complete checkpoint for `step` is on disk at `path`.
  virtual void OnCheckpoint(int64_t step, const std::string& path) {}
  // Polled between steps: true asks the trainer to write a checkpoint and return Cancelled.
  virtual bool ShouldStop() { return false; }
};

struct TrainOptions {
  std::optional<int64_t> steps;      // overrides train.steps
  std::string init_from;             // overrides model.init_from
  std::string resume_dir;            // a checkpoint directory (or a run dir: its newest checkpoint)
  std::string metrics_out;           // JSON lines, one per optimizer step
  std::string save_final;            // safetensors with Hugging Face names, written at the end
  int threads = 0;                   // CPU threads; 0 = all
  bool profile = false;              // time every op; RunTraining prints the totals at the end
  // Distributed: rank and world size, and the store ranks rendezvous through (null when world = 1).
  // A communicator may be given instead (tests with in-process ranks); it is not owned.
  int rank = 0;
  int world_size = 1;
  dist::Store* store = nullptr;
  dist::Communicator* communicator = nullptr;
  std::string dist_backend;          // empty: nccl when training on a GPU, else gloo
  double collective_timeout_s = 300;
};

// Trains `spec` to completion. Returns InvalidArgument / NotFound / FailedPrecondition for bad
// input (callers exit 2), Cancelled when the observer asked to stop, other errors for failures.
absl::Status RunTraining(const kiln::v1::JobSpec& spec, const TrainOptions& options,
                         TrainObserver* observer);

// The exit code a main() should use for a RunTraining result: 0 ok, 2 bad input, 1 otherwise.
int ExitCodeFor(const absl::Status& status);

}  // namespace kiln::train
