// A TEST DOUBLE of kiln::train::RunTraining for control-plane tests. It trains nothing: it walks
// the step counter at a fixed pace, reports placeholder metrics (loss = 1/step, clearly not a
// model's), writes marker checkpoints and resumes from them, honours ShouldStop, and misbehaves
// on request through job labels so that kilnd's fault handling can be exercised with real
// processes:
//   test.step_ms        milliseconds per step (default 20)
//   test.fail           "invalid_argument" (exit 2) or "internal" (exit 1), at the start
//   test.fail_at_step   return INTERNAL at this step, only in a run that did not resume
//   test.stall_at_step  stop stepping at this step (heartbeats continue: a hang)
//   test.ignore_stop    "1": never honour ShouldStop (kilnd must SIGKILL after the grace)
// Tests that need real training use kiln-worker with the real trainer instead.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/train/trainer.h"

namespace kiln::train {
namespace {

int64_t Label(const kiln::v1::JobSpec& spec, const std::string& key, int64_t fallback) {
  auto it = spec.labels().find(key);
  int64_t v = 0;
  return it != spec.labels().end() && absl::SimpleAtoi(it->second, &v) ? v : fallback;
}

// step-N/rank-R holds N; written to a temp name and renamed (atomic).
std::string WriteCheckpoint(const std::string& dir, int64_t step, int rank) {
  const std::string step_dir = absl::StrCat(dir, "/step-", step);
  std::filesystem::create_directories(step_dir);
  const std::string tmp = absl::StrCat(step_dir, "/.rank-", rank, ".tmp");
  std::ofstream(tmp) << step << "\n";
  std::filesystem::rename(tmp, absl::StrCat(step_dir, "/rank-", rank));
  return step_dir;
}

}  // namespace

absl::Status RunTraining(const kiln::v1::JobSpec& spec, const TrainOptions& options,
                         TrainObserver* observer) {
  const auto fail = spec.labels().find("test.fail");
  if (fail != spec.labels().end()) {
    if (fail->second == "invalid_argument") return absl::InvalidArgumentError("scripted bad input");
    return absl::InternalError("scripted failure");
  }
  const int64_t total = spec.train().steps();
  const int64_t step_ms = Label(spec, "test.step_ms", 20);
  const int64_t fail_at = Label(spec, "test.fail_at_step", -1);
  const int64_t stall_at = Label(spec, "test.stall_at_step", -1);
  const int64_t every = spec.checkpoint().every_steps();
  const bool ignore_stop = Label(spec, "test.ignore_stop", 0) == 1;
  int64_t step = 0;
  if (!options.resume_dir.empty()) {
    std::ifstream(absl::StrCat(options.resume_dir, "/rank-", options.rank)) >> step;
    std::printf("scripted trainer: rank %d resumed at step %lld\n", options.rank,
                static_cast<long long>(step));
  } else {
    std::printf("scripted trainer: rank %d starting from scratch\n", options.rank);
  }
  std::fflush(stdout);
  observer->OnStart(step, total);
  while (step < total) {
    if (!ignore_stop && observer->ShouldStop()) {
      if (!spec.checkpoint().dir().empty() && step > 0) {
        observer->OnCheckpoint(step, WriteCheckpoint(spec.checkpoint().dir(), step, options.rank));
      }
      std::printf("scripted trainer: stopping at step %lld\n", static_cast<long long>(step));
      std::fflush(stdout);
      return absl::CancelledError("stop requested");
    }
    if (step == stall_at) {
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    absl::SleepFor(absl::Milliseconds(step_ms));
    ++step;
    if (step == fail_at && options.resume_dir.empty()) return absl::InternalError("scripted crash");
    StepMetrics m;
    m.step = step;
    m.total_steps = total;
    m.loss = 1.0 / static_cast<double>(step);
    m.lr = spec.train().optimizer().lr();
    m.tokens_per_s = 1000;
    m.step_ms = static_cast<double>(step_ms);
    observer->OnStep(m);
    if (every > 0 && step % every == 0 && !spec.checkpoint().dir().empty()) {
      observer->OnCheckpoint(step, WriteCheckpoint(spec.checkpoint().dir(), step, options.rank));
    }
  }
  std::printf("scripted trainer: rank %d done at step %lld\n", options.rank,
              static_cast<long long>(step));
  std::fflush(stdout);
  return absl::OkStatus();
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
