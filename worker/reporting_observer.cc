// ReportingObserver: StepMetrics -> kiln.v1.MetricPoint, and the phase the hang detector watches.
#include "worker/reporting_observer.h"

#include <cstdio>

namespace kiln::worker {

void ReportingObserver::OnStart(int64_t start_step, int64_t total_steps) {
  boundary_ = start_step;
  reporter_->SetStep(start_step);
  reporter_->SetPhase("train");
  std::fprintf(stderr, "kiln-worker: training from step %lld of %lld\n",
               static_cast<long long>(start_step), static_cast<long long>(total_steps));
}

void ReportingObserver::OnStep(const train::StepMetrics& m) {
  boundary_ = m.step;
  reporter_->SetStep(m.step);
  v1::MetricPoint point;
  point.set_step(m.step);
  point.set_loss(m.loss);
  point.set_lr(m.lr);
  point.set_grad_norm(m.grad_norm);
  point.set_tokens_per_s(m.tokens_per_s);
  point.set_step_ms(m.step_ms);
  point.set_loss_scale(m.loss_scale);
  point.set_skipped(m.skipped);
  if (m.val_loss.has_value()) {
    point.set_val_loss(*m.val_loss);
  } else if (pending_val_.has_value() && pending_val_->first == m.step) {
    point.set_val_loss(pending_val_->second);
  }
  pending_val_.reset();
  reporter_->AddMetrics(point);
}

// The trainer evaluates a step before it reports the step (engine/train/trainer.cc), so the value
// waits for OnStep; an evaluation of a step already reported is attached to its point.
void ReportingObserver::OnEval(int64_t step, double val_loss) {
  if (step > boundary_) {
    pending_val_ = std::make_pair(step, val_loss);
  } else {
    reporter_->AddValLoss(step, val_loss);
  }
}

void ReportingObserver::OnCheckpoint(int64_t step, const std::string& path) {
  reporter_->AddCheckpoint(step, path);
}

bool ReportingObserver::ShouldStop() {
  const bool requested = reporter_->ShouldStop();
  return agreement_ == nullptr ? requested : agreement_->ShouldStop(boundary_, requested);
}

}  // namespace kiln::worker
