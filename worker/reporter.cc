// Reporter: the heartbeat loop, the outbox of metrics and checkpoints, and coordinator-loss
// handling.
#include "worker/reporter.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln::worker {

std::atomic<bool> g_stop_signal{false};
std::atomic<bool> g_parent_died{false};

namespace {

constexpr size_t kMaxQueuedPoints = 100000;
constexpr size_t kPointsPerCall = 1000;

void Say(const std::string& line) { std::fprintf(stderr, "kiln-worker: %s\n", line.c_str()); }

}  // namespace

Reporter::Reporter(CoordinatorLink* link, absl::Duration interval, absl::Duration grace, bool rank0,
                   std::function<void()> give_up)
    : link_(link),
      interval_(interval),
      grace_(grace),
      rank0_(rank0),
      give_up_(std::move(give_up)) {}

Reporter::~Reporter() {
  done_ = true;
  {
    absl::MutexLock lock(&mu_);
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void Reporter::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Reporter::SetPhase(const std::string& phase) {
  absl::MutexLock lock(&mu_);
  phase_ = phase;
}

void Reporter::AddMetrics(const v1::MetricPoint& point) {
  if (!rank0_) return;
  absl::MutexLock lock(&mu_);
  if (metrics_.size() >= kMaxQueuedPoints) metrics_.pop_front();
  metrics_.push_back(point);
  last_point_ = point;
  // The first step goes out at once rather than with the next heartbeat (up to a second later):
  // it is when watchers (kiln submit --follow) learn that training has started.
  if (!first_point_queued_) {
    first_point_queued_ = true;
    flush_now_ = true;
    wake_.Signal();
  }
}

void Reporter::AddValLoss(int64_t step, double val_loss) {
  if (!rank0_) return;
  absl::MutexLock lock(&mu_);
  for (auto it = metrics_.rbegin(); it != metrics_.rend(); ++it) {
    if (it->step() == step) {
      it->set_val_loss(val_loss);
      return;
    }
  }
  v1::MetricPoint point = last_point_.step() == step ? last_point_ : v1::MetricPoint();
  point.set_step(step);
  point.set_val_loss(val_loss);
  point.clear_time();
  metrics_.push_back(point);
}

void Reporter::AddCheckpoint(int64_t step, const std::string& path) {
  absl::MutexLock lock(&mu_);
  checkpoints_.emplace_back(step, path);
  flush_now_ = true;
  wake_.Signal();
}

std::string Reporter::stop_reason() {
  if (g_stop_signal.load() && !stop_.load()) return "SIGTERM";
  absl::MutexLock lock(&mu_);
  return stop_reason_;
}

void Reporter::RequestStop(const std::string& reason) {
  if (stop_.exchange(true)) return;
  {
    absl::MutexLock lock(&mu_);
    stop_reason_ = reason;
  }
  Say("stop requested: " + reason);
}

void Reporter::NoteFailure(const absl::Status& status) {
  const absl::Time now = absl::Now();
  if (lost_since_ == absl::InfiniteFuture()) {
    // The coordinator was last known alive at the last successful call, not at this failure.
    lost_since_ = std::min(last_ok_, now);
    Say(absl::StrCat(IsTransient(status) ? "lost contact with kilnd: " : "kilnd refused us: ",
                     status.ToString()));
  }
  if (!IsTransient(status) && !refused_) {
    refused_ = true;
    RequestStop(absl::StrCat("kilnd refused this worker: ", status.message()));
  }
  const absl::Duration lost = now - lost_since_;
  if (lost > grace_ * 3 / 4) {
    RequestStop(absl::StrFormat("kilnd unreachable for %.1f s", absl::ToDoubleSeconds(lost)));
  }
  if (lost > grace_) {
    Say(absl::StrFormat("no coordinator for %.1f s (grace %.1f s): giving up",
                        absl::ToDoubleSeconds(lost), absl::ToDoubleSeconds(grace_)));
    give_up_();
  }
}

absl::Status Reporter::Flush() {
  while (true) {
    std::pair<int64_t, std::string> checkpoint;
    {
      absl::MutexLock lock(&mu_);
      if (checkpoints_.empty()) break;
      checkpoint = checkpoints_.front();
    }
    absl::StatusOr<bool> r = link_->ReportCheckpoint(checkpoint.first, checkpoint.second);
    if (!r.ok()) return r.status();
    absl::MutexLock lock(&mu_);
    checkpoints_.pop_front();
  }
  while (true) {
    std::vector<v1::MetricPoint> batch;
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = 0; i < metrics_.size() && i < kPointsPerCall; ++i) {
        batch.push_back(metrics_[i]);
      }
    }
    if (batch.empty()) break;
    absl::Status s = link_->ReportMetrics(batch);
    if (!s.ok()) return s;
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < batch.size() && !metrics_.empty(); ++i) metrics_.pop_front();
  }
  return absl::OkStatus();
}

void Reporter::Loop() {
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time next = absl::Now();
  while (!done_.load()) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Time wake_at =
          lost_since_ == absl::InfiniteFuture() ? next : absl::Now() + backoff;
      // flush_now_ (not only the signal) so that a request made while this thread was busy
      // with an RPC is not lost.
      if (!flush_now_) {
        wake_.WaitWithDeadline(&mu_,
                               g_parent_died.load() && !told_parent_died_ ? absl::Now() : wake_at);
      }
      flush_now_ = false;
    }
    if (done_.load()) break;
    if (g_parent_died.load() && !told_parent_died_) {
      told_parent_died_ = true;
      Say("kilnd (our parent) exited; training on while a coordinator is reachable");
    }
    std::string phase;
    {
      absl::MutexLock lock(&mu_);
      phase = phase_;
    }
    // While kilnd is lost, never block past the moment the worker must exit.
    absl::Duration timeout = std::max(interval_, absl::Milliseconds(500));
    if (lost_since_ != absl::InfiniteFuture()) {
      timeout = std::clamp(lost_since_ + grace_ - absl::Now(), absl::Milliseconds(100), timeout);
    }
    absl::StatusOr<v1::HeartbeatResponse> hb = link_->Heartbeat(step_.load(), phase, timeout);
    if (hb.ok()) last_ok_ = absl::Now();
    absl::Status s = hb.status();
    if (s.ok() && lost_since_ != absl::InfiniteFuture()) {
      // kilnd is back (perhaps a new one): register again so it knows us, then resume.
      s = link_->Register(/*reconnect=*/true).status();
      if (s.ok()) {
        Say(absl::StrFormat("reconnected to kilnd after %.1f s",
                            absl::ToDoubleSeconds(absl::Now() - lost_since_)));
        lost_since_ = absl::InfiniteFuture();
        backoff = absl::Milliseconds(100);
      }
    }
    if (s.ok()) {
      if (hb->stop()) RequestStop(hb->stop_reason().empty() ? "kilnd" : hb->stop_reason());
      s = Flush();
    }
    if (!s.ok()) {
      NoteFailure(s);
      backoff = std::min(backoff * 2, interval_);
      continue;
    }
    next = absl::Now() + interval_;
  }
}

void Reporter::Finish(int exit_code, const std::string& message) {
  SetPhase("finish");
  done_ = true;
  {
    absl::MutexLock lock(&mu_);
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  if (refused_) return;
  // Never outlive a lost coordinator by more than the grace period (Note [Coordinator loss]).
  const absl::Time deadline = std::min(absl::Now() + grace_, lost_since_ + grace_);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    absl::Status s = Flush();
    if (s.ok()) s = link_->ReportExit(exit_code, message);
    if (s.ok()) return;
    if (!IsTransient(s)) {
      Say("kilnd refused the exit report: " + s.ToString());
      return;
    }
    if (absl::Now() + backoff > deadline) {
      Say("could not report the exit to kilnd within the grace period: " + s.ToString());
      return;
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

}  // namespace kiln::worker
