// The TrainObserver kiln-worker hands to RunTraining: steps, evaluations and checkpoints go to the
// Reporter (and from there to kilnd); ShouldStop answers cancel, drain and coordinator loss.
#pragma once

#include "engine/train/trainer.h"
#include "worker/reporter.h"

namespace kiln::worker {

class ReportingObserver : public train::TrainObserver {
 public:
  explicit ReportingObserver(Reporter* reporter) : reporter_(reporter) {}

  void OnStart(int64_t start_step, int64_t total_steps) override;
  void OnStep(const train::StepMetrics& metrics) override;
  void OnEval(int64_t step, double val_loss) override;
  void OnCheckpoint(int64_t step, const std::string& path) override;
  bool ShouldStop() override { return reporter_->ShouldStop(); }

 private:
  Reporter* reporter_;
};

}  // namespace kiln::worker
