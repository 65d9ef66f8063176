// The worker's reporting thread: heartbeats (step, phase) every interval, flushes queued step
// metrics and checkpoint reports, relays stop requests from kilnd, and keeps the coordinator-loss
// clock (Note [Coordinator loss]). The training thread only touches atomics and queues.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kiln/v1/jobs.pb.h"
#include "worker/coordinator_link.h"

namespace kiln::worker {

// Note [Coordinator loss]
// A worker keeps training while kilnd is unreachable (kilnd may be restarting; its state is on
// disk and it will adopt the worker), retrying with a back-off capped at one heartbeat interval.
// When kilnd answers again the worker registers again (reconnect) and flushes what it queued
// meanwhile. If kilnd stays unreachable for 3/4 of the grace period the worker asks the trainer to
// checkpoint and stop; at the full grace period it exits with code 1 no matter what, so that no
// worker outlives a dead kilnd by more than the grace. A kilnd that answers but refuses the worker
// (superseded attempt, cancelled job, bad token) is a stop request too, with the same deadline.

// Set from signal handlers in worker_main.cc.
extern std::atomic<bool> g_stop_signal;
extern std::atomic<bool> g_parent_died;

class Reporter {
 public:
  // `give_up` runs on the reporting thread once kilnd has been lost for the whole grace period;
  // it must end the process (main() decides that, not this library).
  Reporter(CoordinatorLink* link, absl::Duration interval, absl::Duration grace, bool rank0,
           std::function<void()> give_up);
  ~Reporter();

  void Start();

  // --- training thread ---
  void SetStep(int64_t step) { step_.store(step); }
  void SetPhase(const std::string& phase);
  void AddMetrics(const v1::MetricPoint& point);
  // Attaches a validation loss to the queued point of `step` (or sends one for it).
  void AddValLoss(int64_t step, double val_loss);
  void AddCheckpoint(int64_t step, const std::string& path);
  bool ShouldStop() const { return stop_.load() || g_stop_signal.load(); }
  std::string stop_reason();

  // Stops the thread, then flushes queued reports and the exit report, retrying for up to the
  // grace period while kilnd is unreachable.
  void Finish(int exit_code, const std::string& message);

 private:
  void Loop();
  // Sends queued checkpoints, then metrics. OK when everything went out.
  absl::Status Flush();
  void RequestStop(const std::string& reason);
  // Starts or advances the coordinator-loss clock; calls give_up_ past the grace.
  void NoteFailure(const absl::Status& status);

  CoordinatorLink* link_;
  const absl::Duration interval_;
  const absl::Duration grace_;
  const bool rank0_;
  const std::function<void()> give_up_;

  std::atomic<int64_t> step_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};

  absl::Mutex mu_;
  std::string phase_ ABSL_GUARDED_BY(mu_) = "init";
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::MetricPoint> metrics_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<int64_t, std::string>> checkpoints_ ABSL_GUARDED_BY(mu_);
  v1::MetricPoint last_point_ ABSL_GUARDED_BY(mu_);
  bool first_point_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_now_ ABSL_GUARDED_BY(mu_) = false;  // wake the loop: something to send at once
  absl::CondVar wake_;

  // Loop thread only.
  absl::Time lost_since_ = absl::InfiniteFuture();
  absl::Time last_ok_ = absl::Now();
  bool refused_ = false;
  bool told_parent_died_ = false;
  std::thread thread_;
};

}  // namespace kiln::worker
