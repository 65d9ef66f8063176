// RunTraining: the step loop around a TrainingSession — metrics lines, evaluation, checkpoint
// cadence, cancellation — and the exit-code policy shared by kiln-train and kiln-worker.
#include "engine/train/trainer.h"

#include "engine/train/device_select.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/train/session.h"
#include "nlohmann/json.hpp"
#include "proto/spec_validate.h"

namespace kiln::train {

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kResourceExhausted:  // e.g. the disk filled during a checkpoint
    case absl::StatusCode::kUnimplemented:
      return 2;
    default:
      return 1;
  }
}

namespace {

class MetricsFile {
 public:
  absl::Status Open(const std::string& path) {
    if (path.empty()) return absl::OkStatus();
    out_.open(path, std::ios::app);
    if (!out_) return absl::PermissionDeniedError(absl::StrCat("cannot write metrics to ", path));
    return absl::OkStatus();
  }
  void Write(const nlohmann::json& j) {
    if (!out_.is_open()) return;
    out_ << j.dump() << "\n";
    out_.flush();
  }

 private:
  std::ofstream out_;
};

nlohmann::json StepJson(const StepMetrics& m) {
  nlohmann::json j = {{"step", m.step},           {"loss", m.loss},
                      {"lr", m.lr},               {"grad_norm", m.grad_norm},
                      {"tokens_per_s", m.tokens_per_s}, {"step_ms", m.step_ms}};
  if (m.loss_scale != 1.0 || m.skipped) {
    j["loss_scale"] = m.loss_scale;
    j["skipped"] = m.skipped;
  }
  return j;
}

}  // namespace

absl::Status RunTraining(const kiln::v1::JobSpec& input_spec, const TrainOptions& options,
                         TrainObserver* observer) {
  TrainObserver no_observer;
  if (observer == nullptr) observer = &no_observer;
  kiln::v1::JobSpec spec = input_spec;
  KILN_RETURN_IF_ERROR(spec::NormalizeSpec(&spec));
  // `device: cuda` without a usable GPU: one line, before any data is read (kiln-worker's path;
  // kiln-train checks earlier, before it starts ranks).
  KILN_RETURN_IF_ERROR(CheckTrainingDevice(spec));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<TrainingSession> session,
                        TrainingSession::Create(spec, options));
  MetricsFile metrics;
  KILN_RETURN_IF_ERROR(metrics.Open(options.metrics_out));
  if (!options.resume_dir.empty()) {
    KILN_RETURN_IF_ERROR(session->Resume(options.resume_dir));
  } else {
    KILN_RETURN_IF_ERROR(session->InitializeWeights());
  }
  const bool rank0 = options.rank == 0;
  const int64_t total = session->total_steps();
  observer->OnStart(session->step(), total);
  const auto& t = spec.train();
  const int log_every = t.has_log_every() ? std::max(1, t.log_every()) : 1;
  const int every = spec.checkpoint().every_steps();
  const bool checkpoints = !spec.checkpoint().dir().empty();
  while (session->step() < total) {
    if (observer->ShouldStop()) {
      if (checkpoints) {
        KILN_ASSIGN_OR_RETURN(const std::string dir, session->SaveCheckpoint());
        observer->OnCheckpoint(session->step(), dir);
      }
      return absl::CancelledError(absl::StrCat("stopped at step ", session->step()));
    }
    KILN_ASSIGN_OR_RETURN(StepMetrics m, session->Step());
    if (t.eval_every() > 0 && (m.step % t.eval_every() == 0 || m.step == total) &&
        (session->has_validation() || session->model_config().family == "mlp")) {
      KILN_ASSIGN_OR_RETURN(const double val, session->Evaluate());
      m.val_loss = val;
      observer->OnEval(m.step, val);
    }
    observer->OnStep(m);
    if (rank0) {
      nlohmann::json j = StepJson(m);
      if (m.val_loss) metrics.Write({{"step", m.step}, {"val_loss", *m.val_loss}});
      metrics.Write(j);
      if (m.step % log_every == 0 || m.step == total || m.val_loss) {
        std::fprintf(stderr, "step %*lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | %.0f ms%s%s\n",
                     static_cast<int>(std::to_string(total).size()),
                     static_cast<long long>(m.step), static_cast<long long>(total), m.loss, m.lr,
                     m.grad_norm, m.tokens_per_s, m.step_ms,
                     m.val_loss ? absl::StrFormat(" | val %.4f", *m.val_loss).c_str() : "",
                     m.skipped ? " | skipped (fp16 overflow)" : "");
      }
    }
    if (checkpoints && ((every > 0 && m.step % every == 0) || m.step == total)) {
      KILN_ASSIGN_OR_RETURN(const std::string dir, session->SaveCheckpoint());
      observer->OnCheckpoint(m.step, dir);
    }
  }
  if (!options.save_final.empty()) KILN_RETURN_IF_ERROR(session->SaveFinal(options.save_final));
  if (options.profile && rank0) {
    std::fprintf(stderr, "per-op time over the run (training graph):\n%s",
                 session->executor().ProfileReport().c_str());
  }
  return absl::OkStatus();
}

}  // namespace kiln::train
