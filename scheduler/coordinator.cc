// Coordinator, part 1: construction, recovery after a restart, the user-facing calls (submit, get,
// list, cancel, metrics, nodes), records and events, and drain.
#include "scheduler/coordinator.h"

#include <signal.h>

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status.h"
#include "proto/spec_defaults.h"
#include "proto/spec_loader.h"
#include "proto/spec_validate.h"
#include "scheduler/launcher.h"
#include "scheduler/limits.h"
#include "scheduler/log.h"

namespace kiln::scheduler {

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

std::string JobStateName(v1::JobState state) { return v1::JobState_Name(state); }

namespace {

// FNV-1a over the deterministic serialization: equal specs give equal fingerprints across restarts.
std::string Fingerprint(const v1::JobSpec& spec) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&out);
  }
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", h);
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options, JobStore* store, KvStore* kv, Metrics* metrics)
    : options_(std::move(options)),
      store_(store),
      kv_(kv),
      metrics_(metrics),
      slots_(options_.resources.slots) {}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Start() {
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void Coordinator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (monitor_.joinable()) monitor_.join();
}

// --- records ---

void Coordinator::AddEvent(ActiveJob& job, const std::string& kind, const std::string& message) {
  v1::JobEvent event;
  event.set_job_id(job.rec.job().id());
  SetTime(event.mutable_time(), absl::Now());
  event.set_state(job.rec.job().state());
  event.set_attempt(job.rec.job().attempt());
  event.set_kind(kind);
  event.set_message(message);
  job.pending.push_back(std::move(event));
  LogInfo(message, {{"job", job.rec.job().id()},
                    {"attempt", job.rec.job().attempt()},
                    {"state", JobStateName(job.rec.job().state())},
                    {"event", kind}});
}

void Coordinator::Transition(ActiveJob& job, v1::JobState state, const std::string& reason) {
  job.rec.mutable_job()->set_state(state);
  job.rec.mutable_job()->set_reason(reason);
  AddEvent(job, "state", absl::StrCat(JobStateName(state), ": ", reason));
}

absl::Status Coordinator::Persist(ActiveJob& job) {
  SetTime(job.rec.mutable_job()->mutable_updated_at(), absl::Now());
  absl::Status s = store_->Update(job.rec, &job.pending);
  if (!s.ok()) {
    job.unsaved = true;
    LogError("cannot persist job state; will retry",
             {{"job", job.rec.job().id()}, {"error", s.ToString()}});
    return s;
  }
  job.unsaved = false;
  job.pending.clear();
  BumpVersion();
  return absl::OkStatus();
}

void Coordinator::BumpVersion() {
  absl::MutexLock lock(&version_mu_);
  ++version_;
  version_cv_.SignalAll();
}

uint64_t Coordinator::Version() {
  absl::MutexLock lock(&version_mu_);
  return version_;
}

void Coordinator::AwaitChange(uint64_t seen, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&version_mu_);
  while (version_ == seen) {
    if (version_cv_.WaitWithDeadline(&version_mu_, deadline)) break;
  }
}

int Coordinator::LiveRanks(const ActiveJob& job) const {
  int live = 0;
  for (const RankRuntime& r : job.ranks) live += r.gone ? 0 : 1;
  return live;
}

v1::Job Coordinator::Snapshot(const ActiveJob& job) {
  v1::Job out = job.rec.job();
  for (int r = 0; r < out.ranks_size() && r < static_cast<int>(job.ranks.size()); ++r) {
    const RankRuntime& rt = job.ranks[r];
    v1::RankStatus* status = out.mutable_ranks(r);
    if (rt.step >= 0) status->set_step(rt.step);
    if (!rt.phase.empty()) status->set_phase(rt.phase);
    if (rt.registered) SetTime(status->mutable_last_heartbeat(), rt.last_heartbeat);
  }
  if (out.state() == v1::QUEUED) {
    if (auto it = waiting_.find(out.id()); it != waiting_.end()) {
      out.set_queue_position(it->second.position);
      out.set_reason(it->second.reason);
    }
  }
  return out;
}

// --- recovery ---

absl::Status Coordinator::Recover() {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(next_seq_, store_->MaxJobSeq());
  KILN_ASSIGN_OR_RETURN(std::vector<internal::JobRecord> records, store_->LoadActive());
  const absl::Time now = absl::Now();
  int adopted = 0;
  for (internal::JobRecord& rec : records) {
    auto job = std::make_unique<ActiveJob>();
    job->rec = std::move(rec);
    const v1::Job& j = job->rec.job();
    if (j.state() == v1::QUEUED) {
      job->rec.clear_slots();
    } else {
      slots_.Claim(j.id(), {job->rec.slots().begin(), job->rec.slots().end()});
      job->ranks.resize(j.workers());
      for (const internal::RankProc& proc : job->rec.procs()) {
        if (proc.rank() < 0 || proc.rank() >= j.workers()) continue;
        RankRuntime& rt = job->ranks[proc.rank()];
        rt.gone = !ProcessAlive(proc.pid(), proc.start_time());
        rt.last_heartbeat = now;  // a fresh heartbeat timeout to reconnect in
        rt.last_progress = now;
        adopted += rt.gone ? 0 : 1;
      }
      if (j.attempt() > 0) (void)kv_->Load(j.id(), j.attempt());
      const int live = LiveRanks(*job);
      AddEvent(*job, "recovery",
               absl::StrCat("kilnd restarted: adopted ", live, " of ", j.workers(),
                            " workers of attempt ", j.attempt()));
      // Ranks whose process vanished while kilnd was down: their outcome is unknown unless
      // every one of them was already recorded as exited.
      for (int r = 0; r < j.workers(); ++r) {
        const v1::RankStatus* status = r < j.ranks_size() ? &j.ranks(r) : nullptr;
        const bool recorded_exit = status != nullptr && (status->state() == v1::RANK_EXITED ||
                                                         status->state() == v1::RANK_FAILED);
        if (job->ranks[r].gone && !recorded_exit && j.state() != v1::RESTARTING) {
          MarkGone(*job, r, -1, 0);
        }
      }
      (void)Persist(*job);
    }
    active_[j.id()] = std::move(job);
  }
  schedule_dirty_ = true;
  LogInfo(
      "recovered state",
      {{"active_jobs", active_.size()}, {"adopted_workers", adopted}, {"next_job", next_seq_ + 1}});
  return absl::OkStatus();
}

// --- submission ---

absl::StatusOr<v1::JobSpec> Coordinator::AdmitSpec(const v1::SubmitJobRequest& request,
                                                   std::string* fingerprint) {
  if (!request.spec_yaml().empty() && request.has_spec()) {
    return absl::InvalidArgumentError("set spec or spec_yaml, not both");
  }
  if (request.base_dir().size() > kMaxPathBytes ||
      (!request.base_dir().empty() && request.base_dir()[0] != '/')) {
    return absl::InvalidArgumentError("base_dir must be an absolute path of at most 4096 bytes");
  }
  v1::JobSpec spec;
  spec::SourceMap marks;
  const bool from_yaml = !request.spec_yaml().empty();
  if (from_yaml) {
    spec::LoadOptions options;
    options.source_name = "spec";
    KILN_RETURN_IF_ERROR(spec::ParseSpecYaml(request.spec_yaml(), options, &spec, &marks));
  } else if (request.has_spec()) {
    if (request.spec().ByteSizeLong() > spec::kMaxSpecBytes) {
      return absl::InvalidArgumentError("spec is larger than 1 MiB");
    }
    spec = request.spec();
  } else {
    return absl::InvalidArgumentError("spec or spec_yaml is required");
  }
  if (request.has_name()) spec.set_name(request.name());
  if (request.has_priority()) spec.set_priority(request.priority());
  std::vector<spec::SpecIssue> issues;
  spec::ResolvePaths(request.base_dir(), &spec, &issues);
  spec::ApplyDefaults(&spec);
  for (spec::SpecIssue& issue : spec::ValidateSpec(spec)) issues.push_back(std::move(issue));
  KILN_RETURN_IF_ERROR(
      spec::IssuesToStatus(issues, from_yaml ? "spec" : "", from_yaml ? &marks : nullptr));
  *fingerprint = Fingerprint(spec);
  const NodeResources& node = options_.resources;
  if (spec.resources().device() == "cuda" && node.device != "cuda") {
    return absl::FailedPreconditionError(absl::StrCat(
        "resources.device: cuda, but kilnd found no GPUs (it offers ", node.slots, " CPU slots)"));
  }
  if (node.slots > 0 && spec.resources().workers() > node.slots) {
    return absl::FailedPreconditionError(
        absl::StrCat("resources.workers: the job needs ", spec.resources().workers(),
                     " workers but kilnd has ", node.slots, " slots"));
  }
  return spec;
}

absl::StatusOr<v1::SubmitJobResponse> Coordinator::Submit(const v1::SubmitJobRequest& request) {
  KILN_RETURN_IF_ERROR(CheckSubmissionId(request.submission_id()));
  std::string fingerprint;
  KILN_ASSIGN_OR_RETURN(v1::JobSpec spec, AdmitSpec(request, &fingerprint));

  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("kilnd is draining and accepts no new jobs");
  v1::SubmitJobResponse response;
  if (!request.submission_id().empty()) {
    KILN_ASSIGN_OR_RETURN(auto existing, store_->FindBySubmission(request.submission_id()));
    if (existing.has_value()) {
      if (existing->spec_fingerprint() != fingerprint) {
        return absl::AlreadyExistsError(absl::StrCat("submission_id \"", request.submission_id(),
                                                     "\" was used for ", existing->job().id(),
                                                     " with a different spec"));
      }
      auto it = active_.find(existing->job().id());
      *response.mutable_job() = it != active_.end() ? Snapshot(*it->second) : existing->job();
      response.set_created(false);
      return response;
    }
  }
  auto job = std::make_unique<ActiveJob>();
  const std::string id = absl::StrCat("job-", next_seq_ + 1);
  const std::string job_dir = options_.state_dir + "/jobs/" + id;
  if (spec.checkpoint().dir().empty()) spec.mutable_checkpoint()->set_dir(job_dir + "/checkpoints");
  v1::Job* j = job->rec.mutable_job();
  j->set_id(id);
  j->set_submission_id(request.submission_id());
  j->set_name(spec.name().empty() ? id : spec.name());
  j->set_priority(spec.priority());
  j->set_workers(spec.resources().workers());
  j->set_log_dir(job_dir + "/logs");
  j->set_checkpoint_dir(spec.checkpoint().dir());
  j->set_state(v1::QUEUED);
  j->set_reason("queued");
  j->mutable_progress()->set_total_steps(spec.train().steps());
  *j->mutable_spec() = std::move(spec);
  const absl::Time now = absl::Now();
  SetTime(j->mutable_created_at(), now);
  SetTime(j->mutable_updated_at(), now);
  job->rec.set_spec_fingerprint(fingerprint);
  AddEvent(
      *job, "state",
      absl::StrCat("QUEUED: submitted (", j->workers(), " workers, priority ", j->priority(), ")"));
  KILN_RETURN_IF_ERROR(store_->Insert(job->rec, &job->pending));
  ++next_seq_;
  job->pending.clear();
  BumpVersion();
  *response.mutable_job() = job->rec.job();
  response.set_created(true);
  active_[id] = std::move(job);
  schedule_dirty_ = true;
  // Wake the monitor only when the job might start now; otherwise its queue position and reason
  // are refreshed on the next tick (so a burst of submissions costs one scheduling pass a tick,
  // not one per job).
  if (slots_.free() > 0) wake_.Signal();
  return response;
}

// --- queries ---

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id, bool include_events) {
  KILN_RETURN_IF_ERROR(CheckJobId(job_id));
  v1::Job job;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = active_.find(job_id); it != active_.end()) job = Snapshot(*it->second);
  }
  if (job.id().empty()) {
    KILN_ASSIGN_OR_RETURN(auto record, store_->Get(job_id));
    if (!record.has_value()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
    job = record->job();
  }
  if (include_events) {
    KILN_ASSIGN_OR_RETURN(auto events, store_->Events(job_id, 0, 10000));
    for (v1::JobEvent& e : events) *job.add_events() = std::move(e);
  }
  return job;
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const v1::ListJobsRequest& request) {
  int page_size = request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  if (page_size < 0 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size must be 1..", kMaxPageSize));
  }
  int64_t after = 0;
  if (!request.page_token().empty() &&
      (request.page_token().size() > 20 || !absl::SimpleAtoi(request.page_token(), &after))) {
    return absl::InvalidArgumentError("malformed page_token");
  }
  if (request.states_size() > 8) return absl::InvalidArgumentError("at most 8 states");
  std::vector<v1::JobState> states;
  for (int s : request.states()) states.push_back(static_cast<v1::JobState>(s));
  KILN_ASSIGN_OR_RETURN(JobStore::Page page, store_->List(states, after, page_size));
  v1::ListJobsResponse response;
  absl::MutexLock lock(&mu_);
  for (internal::JobRecord& rec : page.records) {
    auto it = active_.find(rec.job().id());
    *response.add_jobs() = it != active_.end() ? Snapshot(*it->second) : rec.job();
  }
  if (page.more) response.set_next_page_token(absl::StrCat(page.last_seq));
  return response;
}

absl::StatusOr<v1::GetJobMetricsResponse> Coordinator::GetMetrics(
    const v1::GetJobMetricsRequest& request) {
  const int max_points = request.max_points() == 0 ? kDefaultMetricPoints : request.max_points();
  if (max_points < 0 || max_points > kMaxMetricPoints) {
    return absl::InvalidArgumentError(absl::StrCat("max_points must be 1..", kMaxMetricPoints));
  }
  KILN_ASSIGN_OR_RETURN(v1::Job job, GetJob(request.job_id(), false));
  KILN_ASSIGN_OR_RETURN(auto rows,
                        store_->Metrics(request.job_id(), request.after_step(), 0, max_points + 1));
  v1::GetJobMetricsResponse response;
  for (JobStore::MetricRow& row : rows) {
    if (response.points_size() == max_points) {
      response.set_truncated(true);
      break;
    }
    *response.add_points() = std::move(row.point);
  }
  *response.mutable_progress() = job.progress();
  return response;
}

v1::ListNodesResponse Coordinator::ListNodes() {
  absl::MutexLock lock(&mu_);
  v1::ListNodesResponse response;
  v1::Node* node = response.add_nodes();
  node->set_name(options_.node_name);
  node->set_device(options_.resources.device);
  node->set_slots(slots_.total());
  node->set_free(slots_.free());
  node->set_used(slots_.total() - slots_.free());
  for (const std::string& id : slots_.Holders()) node->add_jobs(id);
  node->set_draining(draining_);
  return response;
}

// --- cancel ---

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& job_id, double grace_s,
                                            const std::string& reason) {
  KILN_RETURN_IF_ERROR(CheckJobId(job_id));
  if (grace_s < 0 || grace_s > 3600) return absl::InvalidArgumentError("grace_s must be 0..3600");
  if (reason.size() > kMaxReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason is at most ", kMaxReasonBytes, " bytes"));
  }
  const absl::Duration grace = absl::Seconds(grace_s > 0 ? grace_s : options_.grace_s);
  const std::string why = reason.empty() ? "cancelled by user" : "cancelled: " + reason;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(job_id);
    if (it != active_.end()) {
      ActiveJob& job = *it->second;
      const v1::JobState state = job.rec.job().state();
      if (state == v1::QUEUED || (LiveRanks(job) == 0 && job.rec.stop() == internal::STOP_NONE)) {
        job.rec.mutable_job()->set_cancel_requested(true);
        Finish(job, v1::CANCELLED, why);  // erases the job from active_
      } else if (job.rec.stop() != internal::STOP_FAIL && job.rec.stop() != internal::STOP_CANCEL) {
        BeginStop(job, internal::STOP_CANCEL, why, grace);  // persists the request and its event
        if (job.unsaved) return absl::UnavailableError("kilnd could not record the cancel");
        wake_.Signal();
        return Snapshot(job);
      } else {
        return Snapshot(job);
      }
    }
  }
  return GetJob(job_id, false);
}

// --- drain ---

void Coordinator::BeginDrain() {
  absl::MutexLock lock(&mu_);
  if (draining_) return;
  draining_ = true;
  schedule_dirty_ = true;
  for (auto& [id, job] : active_) {
    const v1::JobState state = job->rec.job().state();
    if ((state == v1::STARTING || state == v1::RUNNING) && job->rec.stop() == internal::STOP_NONE &&
        LiveRanks(*job) > 0) {
      BeginStop(*job, internal::STOP_DRAIN, "kilnd is shutting down",
                absl::Seconds(options_.grace_s));
    }
  }
  LogInfo("draining: no new jobs; running gangs checkpoint and stop");
  wake_.Signal();
}

bool Coordinator::draining() {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Coordinator::Idle() {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, job] : active_) {
    if (LiveRanks(*job) > 0) return false;
  }
  return true;
}

void Coordinator::KillAll() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, job] : active_) {
    for (const internal::RankProc& proc : job->rec.procs()) {
      if (!job->ranks[proc.rank()].gone) SignalGroup(proc.pid(), proc.start_time(), SIGKILL);
    }
  }
}

ClusterGauges Coordinator::Gauges() {
  ClusterGauges g;
  absl::MutexLock lock(&mu_);
  for (v1::JobState s : {v1::QUEUED, v1::STARTING, v1::RUNNING, v1::RESTARTING}) {
    g.jobs_by_state[JobStateName(s)] = 0;
  }
  for (const auto& [id, job] : active_) {
    ++g.jobs_by_state[JobStateName(job->rec.job().state())];
    g.live_workers += LiveRanks(*job);
    g.queue_length += job->rec.job().state() == v1::QUEUED ? 1 : 0;
  }
  g.jobs_total = next_seq_;
  g.slots_total = slots_.total();
  g.slots_used = slots_.total() - slots_.free();
  g.draining = draining_;
  return g;
}

}  // namespace kiln::scheduler
