// Coordinator, part 3: the calls workers make. Each is authorized by the job's current worker token
// (minted per attempt), then updates the rank's soft state (heartbeats) or the durable record
// (registration, metrics, checkpoints, exit reports).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "scheduler/auth.h"
#include "scheduler/coordinator.h"
#include "scheduler/limits.h"
#include "scheduler/log.h"

namespace kiln::scheduler {
namespace {

constexpr size_t kMaxPhaseBytes = 32;
constexpr int kMaxPendingVotes = 8;

}  // namespace

absl::StatusOr<Coordinator::ActiveJob*> Coordinator::WorkerJob(const std::string& token,
                                                               const v1::WorkerRef& worker) {
  if (token.empty()) return absl::UnauthenticatedError("a worker token is required");
  if (!CheckJobId(worker.job_id()).ok()) return absl::InvalidArgumentError("bad job_id");
  auto it = active_.find(worker.job_id());
  if (it == active_.end() || IsTerminal(it->second->rec.job().state()) ||
      !TokensEqual(token, it->second->rec.worker_token())) {
    return absl::UnauthenticatedError(
        absl::StrCat("the worker token is not valid for a running attempt of ", worker.job_id()));
  }
  ActiveJob* job = it->second.get();
  if (worker.attempt() != job->rec.job().attempt()) {
    return absl::FailedPreconditionError(absl::StrCat("attempt ", worker.attempt(),
                                                      " is over; the job is at attempt ",
                                                      job->rec.job().attempt()));
  }
  if (worker.rank() < 0 || worker.rank() >= static_cast<int>(job->ranks.size())) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", worker.rank(), " is out of range"));
  }
  return job;
}

absl::Status Coordinator::AuthorizeWorker(const std::string& token, const v1::WorkerRef& worker) {
  absl::MutexLock lock(&mu_);
  return WorkerJob(token, worker).status();
}

absl::Duration HeartbeatInterval(const v1::FaultSpec& fault) {
  // Four heartbeats per timeout, at most one a second.
  return std::clamp(absl::Seconds(fault.heartbeat_timeout_s() / 4), absl::Milliseconds(100),
                    absl::Seconds(1));
}

v1::Assignment Coordinator::MakeAssignment(const ActiveJob& job, int rank) {
  const v1::Job& j = job.rec.job();
  v1::Assignment a;
  a.set_job_id(j.id());
  a.set_rank(rank);
  a.set_world_size(j.workers());
  a.set_attempt(j.attempt());
  *a.mutable_spec() = j.spec();
  if (j.has_last_checkpoint()) a.set_resume_checkpoint(j.last_checkpoint().path());
  a.set_checkpoint_dir(j.checkpoint_dir());
  for (int r = 0; r < j.workers(); ++r) a.add_peers("127.0.0.1");
  const NodeResources& node = options_.resources;
  a.set_threads(j.spec().resources().has_threads_per_worker()
                    ? j.spec().resources().threads_per_worker()
                    : std::max(1, node.cpu_cores / std::max(1, node.slots)));
  const int slot = rank < job.rec.slots_size() ? job.rec.slots(rank) : -1;
  a.set_device_index(j.spec().resources().device() == "cuda" && slot >= 0 &&
                             slot < static_cast<int>(node.gpu_ids.size())
                         ? node.gpu_ids[slot]
                         : -1);
  a.set_heartbeat_interval_ms(
      static_cast<int>(absl::ToInt64Milliseconds(HeartbeatInterval(j.spec().fault()))));
  a.set_grace_s(options_.grace_s);
  return a;
}

absl::StatusOr<v1::Assignment> Coordinator::Register(const std::string& token,
                                                     const v1::RegisterRequest& request) {
  absl::MutexLock lock(&mu_);
  ActiveJob* job;
  {
    auto found = WorkerJob(token, request.worker());
    if (!found.ok()) return found.status();
    job = *found;
  }
  const int rank = request.worker().rank();
  RankRuntime& rt = job->ranks[rank];
  if (rt.gone) {
    return absl::FailedPreconditionError(absl::StrCat("rank ", rank, " has already exited"));
  }
  const bool first = !rt.registered;
  rt.registered = true;
  rt.last_heartbeat = rt.last_progress = absl::Now();
  v1::RankStatus* status = job->rec.mutable_job()->mutable_ranks(rank);
  if (status->state() == v1::RANK_LAUNCHED) status->set_state(v1::RANK_RUNNING);
  if (rank < job->rec.procs_size() && request.pid() != job->rec.procs(rank).pid()) {
    LogWarn("worker registered with an unexpected pid",
            {{"job", job->rec.job().id()}, {"rank", rank}, {"pid", request.pid()}});
  }
  bool changed = false;
  if (request.reconnect()) {
    AddEvent(*job, "rank", absl::StrCat("rank ", rank, " reconnected"));
    changed = true;
  }
  if (first && job->rec.job().state() == v1::STARTING) {
    bool all = true;
    for (const RankRuntime& r : job->ranks) all = all && r.registered;
    if (all) {
      Transition(*job, v1::RUNNING,
                 absl::StrCat("all ", job->ranks.size(), " ranks registered (attempt ",
                              job->rec.job().attempt(), ")"));
      changed = true;
    }
  }
  if (changed) {
    absl::Status s = Persist(*job);
    if (!s.ok()) return s;
  }
  return MakeAssignment(*job, rank);
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const std::string& token,
                                                             const v1::HeartbeatRequest& request) {
  if (request.phase().size() > kMaxPhaseBytes) {
    return absl::InvalidArgumentError("phase is at most 32 bytes");
  }
  metrics_->CountHeartbeat();
  absl::MutexLock lock(&mu_);
  auto found = WorkerJob(token, request.worker());
  if (!found.ok()) return found.status();
  ActiveJob& job = **found;
  RankRuntime& rt = job.ranks[request.worker().rank()];
  if (rt.gone) return absl::FailedPreconditionError("this rank has already exited");
  const absl::Time now = absl::Now();
  rt.last_heartbeat = now;
  if (request.step() > rt.step || request.phase() != rt.phase) rt.last_progress = now;
  rt.step = std::max(rt.step, request.step());
  rt.phase = request.phase();
  if (!rt.registered) {
    // A worker adopted after a restart may heartbeat before it re-registers.
    rt.registered = true;
    job.rec.mutable_job()->mutable_ranks(request.worker().rank())->set_state(v1::RANK_RUNNING);
  }
  v1::HeartbeatResponse response;
  if (job.rec.stop() != internal::STOP_NONE) {
    response.set_stop(true);
    response.set_stop_reason(job.rec.stop_reason());
  }
  return response;
}

absl::Status Coordinator::ReportMetrics(const std::string& token,
                                        const v1::ReportMetricsRequest& request) {
  if (request.points_size() > kMaxReportedPoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxReportedPoints, " points per call"));
  }
  absl::MutexLock lock(&mu_);
  auto found = WorkerJob(token, request.worker());
  if (!found.ok()) return found.status();
  ActiveJob& job = **found;
  if (request.worker().rank() != 0 || request.points().empty()) return absl::OkStatus();
  // Note [Metrics exactly once]
  // A worker resends a batch whose reply it did not get (kilnd killed after the commit, or the
  // reply lost), so a batch can arrive twice. Rank 0 reports one point per step, in step order,
  // within an attempt; a point at or before the newest stored step of the same attempt is such a
  // resend and is dropped. A new attempt (a gang restart from a checkpoint) reports its steps
  // again, under its own attempt number, and those are kept.
  if (!job.metric_cursor_loaded) {
    absl::StatusOr<std::optional<v1::MetricPoint>> last = store_->LastMetric(job.rec.job().id());
    if (!last.ok()) return last.status();
    job.last_metric_attempt = last->has_value() ? (*last)->attempt() : 0;
    job.last_metric_step = last->has_value() ? (*last)->step() : 0;
    job.metric_cursor_loaded = true;
  }
  const int attempt = job.rec.job().attempt();
  std::vector<v1::MetricPoint> points;
  for (const v1::MetricPoint& p : request.points()) {
    if (attempt == job.last_metric_attempt && p.step() <= job.last_metric_step) continue;
    points.push_back(p);
  }
  if (points.empty()) return absl::OkStatus();
  const absl::Time now = absl::Now();
  for (v1::MetricPoint& p : points) {
    p.set_attempt(job.rec.job().attempt());
    if (!p.has_time()) SetTime(p.mutable_time(), now);
  }
  const v1::MetricPoint& last = points.back();
  v1::JobProgress* progress = job.rec.mutable_job()->mutable_progress();
  progress->set_step(last.step());
  progress->set_total_steps(job.rec.job().spec().train().steps());
  progress->set_loss(last.loss());
  progress->set_lr(last.lr());
  progress->set_tokens_per_s(last.tokens_per_s());
  progress->set_step_ms(last.step_ms());
  for (const v1::MetricPoint& p : points) {
    if (p.has_val_loss()) progress->set_val_loss(p.val_loss());
  }
  SetTime(progress->mutable_updated_at(), now);
  SetTime(job.rec.mutable_job()->mutable_updated_at(), now);
  absl::Status s = store_->AppendMetrics(job.rec, points);
  if (!s.ok()) return s;
  job.last_metric_attempt = attempt;
  job.last_metric_step = points.back().step();
  BumpVersion();
  return absl::OkStatus();
}

absl::StatusOr<bool> Coordinator::ReportCheckpoint(const std::string& token,
                                                   const v1::ReportCheckpointRequest& request) {
  if (request.path().empty() || request.path().size() > kMaxPathBytes || request.step() < 0) {
    return absl::InvalidArgumentError("a checkpoint needs a step >= 0 and a path of 1..4096 bytes");
  }
  absl::MutexLock lock(&mu_);
  auto found = WorkerJob(token, request.worker());
  if (!found.ok()) return found.status();
  ActiveJob& job = **found;
  internal::JobRecord& rec = job.rec;
  internal::CheckpointVote* vote = nullptr;
  for (internal::CheckpointVote& v : *rec.mutable_votes()) {
    if (v.step() == request.step()) vote = &v;
  }
  if (vote == nullptr) {
    if (rec.votes_size() >= kMaxPendingVotes) rec.mutable_votes()->DeleteSubrange(0, 1);
    vote = rec.add_votes();
    vote->set_step(request.step());
  }
  const int rank = request.worker().rank();
  if (std::find(vote->ranks().begin(), vote->ranks().end(), rank) == vote->ranks().end()) {
    vote->add_ranks(rank);
  }
  if (rank == 0 || vote->path().empty()) vote->set_path(request.path());
  const bool complete = vote->ranks_size() == static_cast<int>(job.ranks.size());
  if (complete) {
    v1::CheckpointRef* ref = rec.mutable_job()->mutable_last_checkpoint();
    ref->set_step(vote->step());
    ref->set_path(vote->path());
    ref->set_attempt(rec.job().attempt());
    SetTime(ref->mutable_time(), absl::Now());
    AddEvent(job, "checkpoint",
             absl::StrCat("checkpoint at step ", ref->step(), " complete on all ", job.ranks.size(),
                          " ranks: ", ref->path()));
    const int64_t step = request.step();
    auto* votes = rec.mutable_votes();
    votes->erase(
        std::remove_if(votes->begin(), votes->end(),
                       [step](const internal::CheckpointVote& v) { return v.step() <= step; }),
        votes->end());
  }
  absl::Status s = Persist(job);
  if (!s.ok()) return s;
  return complete;
}

absl::Status Coordinator::ReportExit(const std::string& token,
                                     const v1::ReportExitRequest& request) {
  absl::MutexLock lock(&mu_);
  auto found = WorkerJob(token, request.worker());
  if (!found.ok()) return found.status();
  ActiveJob& job = **found;
  const int rank = request.worker().rank();
  RankRuntime& rt = job.ranks[rank];
  rt.exit_reported = true;
  rt.reported_code = request.exit_code();
  rt.reported_message = request.message().substr(0, kMaxExitMessageBytes);
  // Recorded now so that a kilnd restart before the process is gone still knows the outcome.
  v1::RankStatus* status = job.rec.mutable_job()->mutable_ranks(rank);
  status->set_exit_code(request.exit_code());
  status->set_message(rt.reported_message);
  status->set_state(request.exit_code() == 0 ? v1::RANK_EXITED : v1::RANK_FAILED);
  return Persist(job);
}

}  // namespace kiln::scheduler
