// ReportingObserver: StepMetrics -> kiln.v1.MetricPoint, and the phase the hang detector watches.
#include "worker/reporting_observer.h"

#include <cstdio>

namespace kiln::worker {

void ReportingObserver::OnStart(int64_t start_step, int64_t total_steps) {
  reporter_->SetStep(start_step);
  reporter_->SetPhase("train");
  std::fprintf(stderr, "kiln-worker: training from step %lld of %lld\n",
               static_cast<long long>(start_step), static_cast<long long>(total_steps));
}

void ReportingObserver::OnStep(const train::StepMetrics& m) {
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
  if (m.val_loss.has_value()) point.set_val_loss(*m.val_loss);
  reporter_->AddMetrics(point);
}

void ReportingObserver::OnEval(int64_t step, double val_loss) {
  reporter_->AddValLoss(step, val_loss);
}

void ReportingObserver::OnCheckpoint(int64_t step, const std::string& path) {
  reporter_->AddCheckpoint(step, path);
}

}  // namespace kiln::worker
