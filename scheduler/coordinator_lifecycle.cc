// Coordinator, part 2: the monitor thread. Each tick reaps exited workers, probes adopted ones,
// applies heartbeat and hang timeouts, moves gangs through stop -> back-off -> relaunch, finishes
// jobs, and schedules queued ones. Every decision is persisted (with its event) as it is made.
#include <signal.h>
#include <string.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "scheduler/auth.h"
#include "scheduler/coordinator.h"
#include "scheduler/launcher.h"
#include "scheduler/limits.h"
#include "scheduler/log.h"

namespace kiln::scheduler {
namespace {

std::string Seconds(double s) { return absl::StrFormat("%g s", s); }

std::string Truncate(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n) + "...";
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat("signal ", sig);
}

// "rank 1 exited with code 1: INTERNAL: ...", "rank 0 was killed by signal 9 (SIGKILL)".
std::string DescribeExit(int rank, const v1::RankStatus& status) {
  if (status.signal() != 0) {
    return absl::StrCat("rank ", rank, " was killed by signal ", status.signal(), " (",
                        SignalName(status.signal()), ")");
  }
  if (status.exit_code() < 0) {
    return absl::StrCat("rank ", rank, " exited while kilnd was down (outcome unknown)");
  }
  std::string out = absl::StrCat("rank ", rank, " exited with code ", status.exit_code());
  if (!status.message().empty()) absl::StrAppend(&out, ": ", Truncate(status.message(), 300));
  return out;
}

std::string ResumePoint(const v1::Job& job) {
  return job.has_last_checkpoint() && job.last_checkpoint().step() > 0
             ? absl::StrCat("checkpoint step ", job.last_checkpoint().step())
             : "the beginning";
}

}  // namespace

void Coordinator::MonitorLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    Tick();
    wake_.WaitWithTimeout(&mu_, options_.tick);
  }
}

void Coordinator::Tick() {
  const absl::Time now = absl::Now();
  for (const Exited& e : ReapExited()) {
    auto owner = child_pids_.find(e.pid);
    if (owner == child_pids_.end()) continue;
    const auto [job_id, rank] = owner->second;
    child_pids_.erase(owner);
    auto it = active_.find(job_id);
    if (it == active_.end() || rank >= static_cast<int>(it->second->ranks.size())) continue;
    MarkGone(*it->second, rank, e.exit_code, e.signal);
  }
  std::vector<std::string> ids;
  for (const auto& [id, job] : active_) ids.push_back(id);
  for (const std::string& id : ids) {
    ActiveJob& job = *active_[id];
    if (job.unsaved) (void)Persist(job);
    if (!IsTerminal(job.rec.job().state())) CheckJob(job, now);
    if (IsTerminal(job.rec.job().state()) && !job.unsaved) {
      waiting_.erase(id);
      active_.erase(id);
    }
  }
  if (schedule_dirty_) Schedule();
}

void Coordinator::MarkGone(ActiveJob& job, int rank, int exit_code, int signal) {
  RankRuntime& rt = job.ranks[rank];
  rt.gone = true;
  v1::RankStatus* status = job.rec.mutable_job()->mutable_ranks(rank);
  if (exit_code < 0 && signal == 0 && rt.exit_reported) exit_code = rt.reported_code;
  if (exit_code < 0 && signal == 0 &&
      (status->state() == v1::RANK_EXITED || status->state() == v1::RANK_FAILED)) {
    exit_code = status->exit_code();  // reported before a kilnd restart
  }
  status->set_exit_code(exit_code);
  status->set_signal(signal);
  if (rt.exit_reported) status->set_message(rt.reported_message);
  status->set_state(exit_code == 0 && signal == 0 ? v1::RANK_EXITED : v1::RANK_FAILED);
  AddEvent(job, "rank", DescribeExit(rank, *status));
  (void)Persist(job);
}

void Coordinator::CheckJob(ActiveJob& job, absl::Time now) {
  const v1::Job& j = job.rec.job();
  if (j.state() == v1::QUEUED) return;
  // Workers adopted after a restart are not our children: probe /proc once a second.
  for (int r = 0; r < static_cast<int>(job.ranks.size()); ++r) {
    RankRuntime& rt = job.ranks[r];
    if (rt.gone || rt.child || now < rt.next_probe || r >= job.rec.procs_size()) continue;
    rt.next_probe = now + absl::Seconds(1);
    const internal::RankProc& proc = job.rec.procs(r);
    if (!ProcessAlive(proc.pid(), proc.start_time())) MarkGone(job, r, -1, 0);
  }
  const v1::FaultSpec& fault = j.spec().fault();
  const int workers = static_cast<int>(job.ranks.size());
  if (job.rec.stop() == internal::STOP_NONE &&
      (j.state() == v1::STARTING || j.state() == v1::RUNNING)) {
    int exited_ok = 0;
    for (int r = 0; r < workers; ++r) {
      const v1::RankStatus& status = j.ranks(r);
      if (!job.ranks[r].gone) continue;
      if (status.state() == v1::RANK_EXITED) {
        ++exited_ok;
        continue;
      }
      FailAttempt(job, DescribeExit(r, status), status.signal() != 0 ? -1 : status.exit_code());
      return;
    }
    if (exited_ok == workers) {
      Finish(job, v1::SUCCEEDED,
             absl::StrCat("all ", workers, " ranks finished at step ", j.progress().step()));
      return;
    }
    for (int r = 0; r < workers; ++r) {
      RankRuntime& rt = job.ranks[r];
      if (rt.gone || r >= job.rec.procs_size()) continue;
      const internal::RankProc& proc = job.rec.procs(r);
      const double silent = absl::ToDoubleSeconds(now - rt.last_heartbeat);
      if (silent > fault.heartbeat_timeout_s()) {
        SignalGroup(proc.pid(), proc.start_time(), SIGKILL);
        FailAttempt(job,
                    absl::StrCat("rank ", r, " missed heartbeats for ", Seconds(std::floor(silent)),
                                 " (fault.heartbeat_timeout_s = ",
                                 Seconds(fault.heartbeat_timeout_s()), ")"),
                    -1);
        return;
      }
    }
    CheckHang(job, now);
    return;
  }
  if (job.rec.stop() != internal::STOP_NONE) {
    const int live = LiveRanks(job);
    if (live > 0 && !job.kill_sent && absl::ToUnixMillis(now) >= job.rec.stop_deadline_ms()) {
      for (int r = 0; r < workers && r < job.rec.procs_size(); ++r) {
        if (!job.ranks[r].gone) {
          SignalGroup(job.rec.procs(r).pid(), job.rec.procs(r).start_time(), SIGKILL);
        }
      }
      job.kill_sent = true;
      AddEvent(
          job, "info",
          absl::StrCat("grace period over: SIGKILL to ", live, live == 1 ? " rank" : " ranks"));
      (void)Persist(job);
    }
    if (live == 0) FinishStop(job);
    return;
  }
  if (j.state() == v1::RESTARTING && LiveRanks(job) == 0 && !draining_ &&
      absl::ToUnixMillis(now) >= job.rec.next_launch_ms()) {
    LaunchAttempt(job);
  }
}

// Note [Naming the hung rank]
// A gang hangs as a whole: when one rank stops (SIGSTOP, a deadlock, a stuck disk), its peers
// block inside the next collective while their heartbeat threads keep reporting. Every rank then
// shows no step progress, and which one passes fault.hang_timeout_s first depends only on when
// each last heartbeated. So the attempt fails naming a rank that has also gone silent (no
// heartbeat for a few intervals, though not yet for fault.heartbeat_timeout_s), if there is one:
// that rank is the likely cause and the others wait on it. Otherwise the rank that is stuck while
// heartbeating is named, as before.
void Coordinator::CheckHang(ActiveJob& job, absl::Time now) {
  const v1::FaultSpec& fault = job.rec.job().spec().fault();
  const absl::Duration silent_after = 2 * HeartbeatInterval(fault) + absl::Milliseconds(500);
  int stuck = -1, silent = -1;
  for (int r = 0; r < static_cast<int>(job.ranks.size()) && r < job.rec.procs_size(); ++r) {
    const RankRuntime& rt = job.ranks[r];
    if (rt.gone || !rt.registered) continue;
    if (stuck < 0 && absl::ToDoubleSeconds(now - rt.last_progress) > fault.hang_timeout_s()) {
      stuck = r;
    }
    if (now - rt.last_heartbeat > silent_after &&
        (silent < 0 || rt.last_heartbeat < job.ranks[silent].last_heartbeat)) {
      silent = r;
    }
  }
  if (stuck < 0) return;
  const int r = silent >= 0 ? silent : stuck;
  const RankRuntime& rt = job.ranks[r];
  const internal::RankProc& proc = job.rec.procs(r);
  SignalGroup(proc.pid(), proc.start_time(), SIGKILL);
  const std::string since = Seconds(std::floor(absl::ToDoubleSeconds(now - rt.last_progress)));
  std::string reason =
      silent >= 0
          ? absl::StrCat("rank ", r, " hung: no heartbeats and no step progress for ", since)
          : absl::StrCat("rank ", r, " hung: heartbeats but no step progress for ", since);
  absl::StrAppend(&reason, " at step ", std::max<int64_t>(0, rt.step), " (phase ",
                  rt.phase.empty() ? "init" : rt.phase,
                  "; fault.hang_timeout_s = ", Seconds(fault.hang_timeout_s()), ")");
  if (silent >= 0 && job.ranks.size() > 1) absl::StrAppend(&reason, "; the other ranks wait on it");
  FailAttempt(job, reason, -1);
}

void Coordinator::FailAttempt(ActiveJob& job, const std::string& reason, int exit_code) {
  const v1::Job& j = job.rec.job();
  const int max_restarts = j.spec().fault().max_restarts();
  const absl::Duration grace = absl::Seconds(options_.grace_s);
  if (exit_code == 2) {
    BeginStop(job, internal::STOP_FAIL, reason + " (bad input: not retried)", grace);
  } else if (exit_code == 126 || exit_code == 127) {
    BeginStop(job, internal::STOP_FAIL, reason + " (the worker could not be started: not retried)",
              grace);
  } else if (j.restarts() >= max_restarts) {
    BeginStop(job, internal::STOP_FAIL,
              absl::StrCat(reason, "; no restarts left (fault.max_restarts = ", max_restarts, ")"),
              grace);
  } else {
    BeginStop(job, internal::STOP_RESTART, reason, grace);
  }
}

void Coordinator::BeginStop(ActiveJob& job, internal::StopIntent intent, const std::string& reason,
                            absl::Duration grace) {
  job.rec.set_stop(intent);
  job.rec.set_stop_reason(reason);
  job.rec.set_stop_deadline_ms(absl::ToUnixMillis(absl::Now() + grace));
  job.kill_sent = false;
  for (int r = 0; r < static_cast<int>(job.ranks.size()) && r < job.rec.procs_size(); ++r) {
    if (job.ranks[r].gone) continue;
    SignalGroup(job.rec.procs(r).pid(), job.rec.procs(r).start_time(), SIGTERM);
    job.rec.mutable_job()->mutable_ranks(r)->set_state(v1::RANK_STOPPING);
  }
  v1::Job* j = job.rec.mutable_job();
  const std::string attempt = absl::StrCat("attempt ", j->attempt());
  const std::string grace_text = Seconds(absl::ToDoubleSeconds(grace));
  switch (intent) {
    case internal::STOP_RESTART:
      Transition(job, v1::RESTARTING,
                 absl::StrCat(attempt, " failed: ", reason, "; stopping the gang to restart it"));
      break;
    case internal::STOP_FAIL:
      j->set_reason("stopping the gang: " + reason);
      AddEvent(job, "info", absl::StrCat(attempt, " failed: ", reason, "; stopping the gang"));
      break;
    case internal::STOP_CANCEL:
      j->set_cancel_requested(true);
      j->set_reason(absl::StrCat("cancelling (", reason, ")"));
      AddEvent(job, "cancel",
               absl::StrCat(reason, ": SIGTERM to the gang, SIGKILL after ", grace_text));
      break;
    case internal::STOP_DRAIN:
      j->set_reason("kilnd is shutting down: the gang checkpoints and stops; it will be requeued");
      AddEvent(job, "info", absl::StrCat(reason, ": asking ", attempt, " to checkpoint and stop"));
      break;
    default:
      break;
  }
  (void)Persist(job);
}

void Coordinator::FinishStop(ActiveJob& job) {
  const internal::StopIntent intent = job.rec.stop();
  const std::string reason = job.rec.stop_reason();
  job.rec.set_stop(internal::STOP_NONE);
  job.rec.clear_stop_reason();
  job.kill_sent = false;
  v1::Job* j = job.rec.mutable_job();
  bool all_ok = j->ranks_size() > 0;
  for (const v1::RankStatus& r : j->ranks()) all_ok = all_ok && r.state() == v1::RANK_EXITED;
  if ((intent == internal::STOP_CANCEL || intent == internal::STOP_DRAIN) && all_ok) {
    Finish(job, v1::SUCCEEDED, "all ranks finished before the stop took effect");
    return;
  }
  switch (intent) {
    case internal::STOP_RESTART: {
      j->set_restarts(j->restarts() + 1);
      metrics_->CountRestart();
      const double backoff =
          std::min(300.0, j->spec().fault().restart_backoff_s() * std::pow(2.0, j->restarts() - 1));
      job.rec.set_next_launch_ms(absl::ToUnixMillis(absl::Now() + absl::Seconds(backoff)));
      j->set_reason(absl::StrCat("restart ", j->restarts(), " of ",
                                 j->spec().fault().max_restarts(), " in ", Seconds(backoff),
                                 " from ", ResumePoint(*j), " after: ", reason));
      AddEvent(job, "info", "gang stopped; " + j->reason());
      (void)Persist(job);
      break;
    }
    case internal::STOP_FAIL:
      Finish(job, v1::FAILED, reason);
      break;
    case internal::STOP_CANCEL:
      Finish(job, v1::CANCELLED, reason);
      break;
    case internal::STOP_DRAIN:
      slots_.Release(j->id());
      job.rec.clear_slots();
      Transition(job, v1::QUEUED,
                 absl::StrCat("requeued by kilnd shutdown; resumes from ", ResumePoint(*j)));
      schedule_dirty_ = true;
      (void)Persist(job);
      break;
    default:
      break;
  }
}

void Coordinator::Finish(ActiveJob& job, v1::JobState state, const std::string& reason) {
  v1::Job* j = job.rec.mutable_job();
  SetTime(j->mutable_finished_at(), absl::Now());
  job.rec.set_stop(internal::STOP_NONE);
  Transition(job, state, reason);
  slots_.Release(j->id());
  job.rec.clear_slots();
  kv_->Drop(j->id(), INT32_MAX);
  for (auto it = child_pids_.begin(); it != child_pids_.end();) {
    it = it->second.first == j->id() ? child_pids_.erase(it) : std::next(it);
  }
  schedule_dirty_ = true;
  (void)Persist(job);  // the monitor drops the job from memory once it is saved
}

void Coordinator::Schedule() {
  schedule_dirty_ = false;
  std::vector<QueuedJob> queue;
  for (auto& [id, job] : active_) {
    const v1::Job& j = job->rec.job();
    if (j.state() != v1::QUEUED) continue;
    if (slots_.total() > 0 && j.workers() > slots_.total()) {
      Finish(*job, v1::FAILED,
             absl::StrCat("needs ", j.workers(), " slots but kilnd now has ", slots_.total()));
      continue;
    }
    queue.push_back({id, JobStore::SeqOf(id), j.priority(), j.workers()});
  }
  // Planning (and formatting the reasons of a long queue) happens without the lock, so that a
  // burst of submissions is not held up by the queue it builds; starts are re-checked after.
  const int free = slots_.free();
  const int total = slots_.total();
  const bool draining = draining_;
  mu_.Unlock();
  SchedulePlan plan = PlanSchedule(std::move(queue), free, total, draining);
  mu_.Lock();
  for (const std::string& id : plan.start) {
    auto it = active_.find(id);
    if (it == active_.end() || it->second->rec.job().state() != v1::QUEUED) continue;
    ActiveJob& job = *it->second;
    const std::vector<int> slots = slots_.Allocate(id, job.rec.job().workers());
    if (slots.empty()) {
      schedule_dirty_ = true;  // taken meanwhile: plan again next tick
      continue;
    }
    job.rec.clear_slots();
    for (int s : slots) job.rec.add_slots(s);
    LaunchAttempt(job);
  }
  waiting_.clear();
  for (Waiting& w : plan.waiting) waiting_[w.id] = std::move(w);
}

void Coordinator::LaunchAttempt(ActiveJob& job) {
  v1::Job* j = job.rec.mutable_job();
  const int workers = j->workers();
  const absl::Time now = absl::Now();
  j->set_attempt(j->attempt() + 1);
  job.rec.set_worker_token(MintToken());
  job.rec.clear_procs();
  job.rec.clear_votes();
  job.kill_sent = false;
  j->clear_ranks();
  job.ranks.assign(workers, RankRuntime());
  for (int r = 0; r < workers; ++r) {
    v1::RankStatus* status = j->add_ranks();
    status->set_rank(r);
    status->set_state(v1::RANK_LAUNCHED);
    status->set_slot(r < job.rec.slots_size() ? job.rec.slots(r) : -1);
  }
  if (!j->has_started_at()) SetTime(j->mutable_started_at(), now);
  std::vector<int> slots(job.rec.slots().begin(), job.rec.slots().end());
  Transition(
      job, v1::STARTING,
      absl::StrCat("attempt ", j->attempt(), ": launching ", workers,
                   workers == 1 ? " worker" : " workers", " on slot", workers == 1 ? " " : "s ",
                   absl::StrJoin(slots, ","), " from ", ResumePoint(*j)));
  kv_->Drop(j->id(), j->attempt());
  const absl::Status saved = Persist(job);  // the attempt and its token exist before any process

  std::error_code ec;
  std::filesystem::create_directories(j->log_dir(), ec);
  std::filesystem::create_directories(j->checkpoint_dir(), ec);
  const NodeResources& node = options_.resources;
  const int threads = j->spec().resources().has_threads_per_worker()
                          ? j->spec().resources().threads_per_worker()
                          : std::max(1, node.cpu_cores / std::max(1, node.slots));
  for (int r = 0; r < workers; ++r) {
    RankRuntime& rt = job.ranks[r];
    rt.last_heartbeat = now;
    rt.last_progress = now;
    LaunchRequest request;
    request.binary = options_.worker_binary;
    request.args = {"--server",  options_.worker_server,
                    "--job",     j->id(),
                    "--rank",    absl::StrCat(r),
                    "--attempt", absl::StrCat(j->attempt()),
                    "--grace-s", absl::StrCat(options_.grace_s)};
    if (!options_.worker_tls_ca.empty()) {
      request.args.push_back("--tls-ca");
      request.args.push_back(options_.worker_tls_ca);
    }
    const int slot = r < job.rec.slots_size() ? job.rec.slots(r) : 0;
    std::string cuda_devices;
    if (j->spec().resources().device() == "cuda" && slot < static_cast<int>(node.gpu_ids.size())) {
      cuda_devices = absl::StrCat(node.gpu_ids[slot]);
    }
    request.env = {"KILN_WORKER_TOKEN=" + job.rec.worker_token(),
                   "KILN_JOB_ID=" + j->id(),
                   absl::StrCat("KILN_RANK=", r),
                   absl::StrCat("KILN_WORLD_SIZE=", workers),
                   absl::StrCat("KILN_ATTEMPT=", j->attempt()),
                   "KILN_SERVER=" + options_.worker_server,
                   absl::StrCat("OMP_NUM_THREADS=", threads),
                   "CUDA_VISIBLE_DEVICES=" + cuda_devices};
    request.log_path = absl::StrCat(j->log_dir(), "/rank-", r, ".log");
    request.header = absl::StrCat(
        "==== kiln: ", j->id(), " attempt ", j->attempt(), " rank ", r, "/", workers, " starting ",
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now, absl::UTCTimeZone()), " ====");
    absl::StatusOr<Launched> launched =
        saved.ok() ? scheduler::Launch(request) : absl::StatusOr<Launched>(saved);
    internal::RankProc* proc = job.rec.add_procs();
    proc->set_rank(r);
    proc->set_slot(slot);
    v1::RankStatus* status = j->mutable_ranks(r);
    if (!launched.ok()) {
      rt.gone = true;
      status->set_state(v1::RANK_FAILED);
      status->set_exit_code(127);
      status->set_message(std::string(launched.status().message()));
      AddEvent(job, "rank",
               absl::StrCat("rank ", r, " could not be launched: ", launched.status().message()));
      continue;
    }
    rt.gone = false;
    rt.child = true;
    proc->set_pid(launched->pid);
    proc->set_start_time(launched->start_time);
    status->set_pid(launched->pid);
    child_pids_[launched->pid] = {j->id(), r};
  }
  (void)Persist(job);
}

}  // namespace kiln::scheduler
