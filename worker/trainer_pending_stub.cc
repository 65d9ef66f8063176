// TEMPORARY STUB — delete when engine/train's RunTraining lands and link kiln-worker against it.
// It lets kiln-worker (and so the whole control plane) build before the trainer exists. It trains
// nothing and reports nothing: every call fails with UNIMPLEMENTED, so jobs end FAILED with a
// reason that says so. Tests that need real training are tagged "requires-trainer".
#include "engine/train/trainer.h"

namespace kiln::train {

absl::Status RunTraining(const kiln::v1::JobSpec& spec, const TrainOptions& options,
                         TrainObserver* observer) {
  (void)spec;
  (void)options;
  (void)observer;
  return absl::UnimplementedError(
      "the trainer has not landed yet: kiln-worker is linked with worker/trainer_pending_stub.cc");
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

}  // namespace kiln::train
