// The TrainObserver kiln-worker hands to RunTraining: steps, evaluations and checkpoints go to the
// Reporter (and from there to kilnd); ShouldStop answers cancel, drain and coordinator loss, at a
// step boundary every rank of the gang agrees on (Note [Agreeing on a stop]).
#pragma once

#include <optional>
#include <utility>

#include "engine/train/trainer.h"
#include "worker/reporter.h"
#include "worker/stop_agreement.h"

namespace kiln::worker {

class ReportingObserver : public train::TrainObserver {
 public:
  // `agreement` may be null (one rank: a stop is honoured at once).
  ReportingObserver(Reporter* reporter, StopAgreement* agreement)
      : reporter_(reporter), agreement_(agreement) {}

  void OnStart(int64_t start_step, int64_t total_steps) override;
  void OnStep(const train::StepMetrics& metrics) override;
  void OnEval(int64_t step, double val_loss) override;
  void OnCheckpoint(int64_t step, const std::string& path) override;
  bool ShouldStop() override;

 private:
  Reporter* reporter_;
  StopAgreement* agreement_;
  int64_t boundary_ = 0;  // optimizer steps completed: where the trainer polls ShouldStop
  std::optional<std::pair<int64_t, double>> pending_val_;  // an evaluation not yet reported
};

}  // namespace kiln::worker
