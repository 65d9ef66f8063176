// The Coordinator owns every job's lifecycle: it admits submissions, schedules gangs onto slots,
// launches and watches worker processes, handles worker RPCs, stops and restarts gangs, and writes
// every transition to the JobStore before anything else sees it. The gRPC services are thin
// adapters over it. Its monitor thread drives time: reaping, timeouts, back-offs, scheduling.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kiln/internal/job_record.pb.h"
#include "kiln/v1/cluster_service.pb.h"
#include "kiln/v1/job_service.pb.h"
#include "scheduler/job_store.h"
#include "scheduler/kv_store.h"
#include "scheduler/metrics.h"
#include "scheduler/scheduler.h"
#include "scheduler/slots.h"

namespace kiln::scheduler {

struct CoordinatorOptions {
  std::string state_dir;
  std::string node_name;
  NodeResources resources;
  double grace_s = 30;
  std::string worker_binary;
  std::string worker_server;  // the address workers dial
  std::string worker_tls_ca;  // certificate workers trust; empty = plaintext
  absl::Duration tick = absl::Milliseconds(100);
};

class Coordinator {
 public:
  Coordinator(CoordinatorOptions options, JobStore* store, KvStore* kv, Metrics* metrics);
  ~Coordinator();

  // The address workers dial (known once the server has bound its port). Call before Recover.
  void set_worker_server(const std::string& address) { options_.worker_server = address; }
  // Loads unfinished jobs from the store and adopts their live workers. Call once, before Start.
  absl::Status Recover();
  // Starts the monitor thread (which also launches workers; see Note [Worker process lifetime]).
  void Start();
  void Stop();

  // --- JobService ---
  absl::StatusOr<v1::SubmitJobResponse> Submit(const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id, bool include_events);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id, double grace_s,
                                 const std::string& reason);
  absl::StatusOr<v1::GetJobMetricsResponse> GetMetrics(const v1::GetJobMetricsRequest& request);
  v1::ListNodesResponse ListNodes();

  // --- ClusterService; `token` is the call's bearer token ---
  absl::StatusOr<v1::Assignment> Register(const std::string& token,
                                          const v1::RegisterRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const std::string& token,
                                                  const v1::HeartbeatRequest& request);
  absl::Status ReportMetrics(const std::string& token, const v1::ReportMetricsRequest& request);
  absl::StatusOr<bool> ReportCheckpoint(const std::string& token,
                                        const v1::ReportCheckpointRequest& request);
  absl::Status ReportExit(const std::string& token, const v1::ReportExitRequest& request);
  // For the key-value calls: OK when `token` is the current token of the worker's job and attempt.
  absl::Status AuthorizeWorker(const std::string& token, const v1::WorkerRef& worker);

  // --- watching ---
  // Increases whenever a job's record, events or metrics are written.
  uint64_t Version();
  void AwaitChange(uint64_t seen, absl::Duration timeout);
  JobStore* store() { return store_; }

  // --- shutdown ---
  // Stops admitting, asks running gangs to checkpoint and stop; they are requeued.
  void BeginDrain();
  bool draining();
  // True when no worker process of any job is alive.
  bool Idle();
  // SIGKILLs every live worker group (a second SIGTERM, or the drain deadline).
  void KillAll();

  ClusterGauges Gauges();

 private:
  struct RankRuntime {
    bool child = false;  // forked by this kilnd, so waitpid reports its exit
    bool gone = true;    // the process no longer exists
    bool registered = false;
    absl::Time last_heartbeat;
    absl::Time last_progress;
    int64_t step = -1;
    std::string phase;
    bool exit_reported = false;
    int reported_code = -1;
    std::string reported_message;
    absl::Time next_probe;
  };
  struct ActiveJob {
    internal::JobRecord rec;
    std::vector<RankRuntime> ranks;     // the current attempt's
    std::vector<v1::JobEvent> pending;  // events written with the next Persist
    bool kill_sent = false;
    bool unsaved = false;  // a Persist failed; retried every tick
    // The newest stored metric point's attempt and step (Note [Metrics exactly once]); loaded from
    // the store on the first report after kilnd starts.
    bool metric_cursor_loaded = false;
    int last_metric_attempt = 0;
    int64_t last_metric_step = 0;
  };

  // Lifecycle (coordinator_lifecycle.cc).
  void MonitorLoop();
  void Tick() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckJob(ActiveJob& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the attempt when a rank made no step progress for fault.hang_timeout_s.
  void CheckHang(ActiveJob& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Schedule() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LaunchAttempt(ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkGone(ActiveJob& job, int rank, int exit_code, int signal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailAttempt(ActiveJob& job, const std::string& reason, int exit_code)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BeginStop(ActiveJob& job, internal::StopIntent intent, const std::string& reason,
                 absl::Duration grace) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishStop(ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(ActiveJob& job, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Records (coordinator.cc).
  void AddEvent(ActiveJob& job, const std::string& kind, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Transition(ActiveJob& job, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Persist(ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job Snapshot(const ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BumpVersion();
  int LiveRanks(const ActiveJob& job) const;

  // Worker calls (coordinator_workers.cc): the job of a valid token, or UNAUTHENTICATED.
  absl::StatusOr<ActiveJob*> WorkerJob(const std::string& token, const v1::WorkerRef& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Assignment MakeAssignment(const ActiveJob& job, int rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<v1::JobSpec> AdmitSpec(const v1::SubmitJobRequest& request,
                                        std::string* fingerprint);

  CoordinatorOptions options_;
  JobStore* const store_;
  KvStore* const kv_;
  Metrics* const metrics_;

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<ActiveJob>> active_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::pair<std::string, int>> child_pids_ ABSL_GUARDED_BY(mu_);  // -> job, rank
  std::map<std::string, Waiting> waiting_ ABSL_GUARDED_BY(mu_);
  SlotPool slots_ ABSL_GUARDED_BY(mu_);
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool schedule_dirty_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar wake_;

  absl::Mutex version_mu_;
  absl::CondVar version_cv_;
  uint64_t version_ ABSL_GUARDED_BY(version_mu_) = 0;

  std::thread monitor_;
};

bool IsTerminal(v1::JobState state);
std::string JobStateName(v1::JobState state);
// How often a job's workers heartbeat: four times per fault.heartbeat_timeout_s, 0.1 s to 1 s.
absl::Duration HeartbeatInterval(const v1::FaultSpec& fault);

}  // namespace kiln::scheduler
