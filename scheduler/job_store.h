// JobStore: kilnd's durable state in one SQLite file (WAL). Jobs (as JobRecord blobs with indexed
// id, submission id and state), their events, rank 0's step metrics, and the rendezvous key-value
// pairs. The coordinator writes through it before it answers; see Note [Durability].
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kiln/internal/job_record.pb.h"
#include "kiln/v1/jobs.pb.h"
#include "scheduler/sqlite.h"

namespace kiln::scheduler {

// Note [Durability]
// Every accepted job and every state transition, with its event, is one SQLite transaction
// committed in WAL mode with synchronous=FULL before kilnd replies or moves on, so `kill -9 kilnd`
// (or a power cut) loses nothing that a client was told. The fsync of each commit is most of a
// submission's latency; `kilnd --sync normal` drops it (synchronous=NORMAL), keeping every commit
// safe from a crash of kilnd but not from a crash of the OS. Heartbeats are not written: they are
// soft state that workers resend, and after a restart the coordinator gives every rank a fresh
// heartbeat timeout to reconnect in. The schema carries a version (PRAGMA user_version); a store
// written by a newer kilnd is refused rather than misread.
//
// Checkpointing the WAL into the database file (and its fsync) is moved off the commit path: the
// writing connection has auto-checkpoints off, and a background thread with its own connection
// runs a PASSIVE checkpoint every second, which never blocks writers. A commit therefore costs one
// WAL append and one fsync, not an occasional multi-megabyte checkpoint.

class JobStore {
 public:
  static constexpr int kSchemaVersion = 1;

  // `full_sync`: see Database::Open (kilnd's --sync flag).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path,
                                                        bool full_sync = true);
  ~JobStore();

  // Largest job sequence number so far (0 when empty); job ids are "job-<seq>".
  absl::StatusOr<int64_t> MaxJobSeq();

  // Inserts a new job and appends `events` (their seq is filled in) in one transaction.
  // ALREADY_EXISTS when the id or the submission id is taken.
  absl::Status Insert(const internal::JobRecord& record, std::vector<v1::JobEvent>* events);
  // Replaces the job's record and appends `events` in one transaction.
  absl::Status Update(const internal::JobRecord& record, std::vector<v1::JobEvent>* events);
  // Appends metric points and replaces the record (its progress) in one transaction.
  absl::Status AppendMetrics(const internal::JobRecord& record,
                             const std::vector<v1::MetricPoint>& points);

  absl::StatusOr<std::optional<internal::JobRecord>> Get(const std::string& job_id);
  absl::StatusOr<std::optional<internal::JobRecord>> FindBySubmission(
      const std::string& submission_id);
  // Jobs that are not SUCCEEDED, FAILED or CANCELLED, oldest first.
  absl::StatusOr<std::vector<internal::JobRecord>> LoadActive();

  struct Page {
    std::vector<internal::JobRecord> records;
    int64_t last_seq = 0;
    bool more = false;
  };
  // Jobs with seq > after_seq in the given states (all when empty), oldest first.
  absl::StatusOr<Page> List(const std::vector<v1::JobState>& states, int64_t after_seq, int limit);

  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& job_id, int64_t after_seq,
                                                   int limit);

  struct MetricRow {
    int64_t row = 0;  // increasing; a cursor for watchers
    v1::MetricPoint point;
  };
  absl::StatusOr<std::vector<MetricRow>> Metrics(const std::string& job_id, int64_t after_step,
                                                 int64_t after_row, int limit);

  // The newest metric point stored for a job, if any.
  absl::StatusOr<std::optional<v1::MetricPoint>> LastMetric(const std::string& job_id);

  // The newest event seq and metric row of a job (0 when none): where a live watcher starts.
  absl::Status Cursors(const std::string& job_id, int64_t* event_seq, int64_t* metric_row);

  absl::Status KvPut(const std::string& job_id, int attempt, const std::string& key,
                     const std::string& value);
  absl::StatusOr<std::map<std::string, std::string>> KvLoad(const std::string& job_id, int attempt);
  // Drops the keys of every attempt of the job below `below_attempt` (INT32_MAX: all of them).
  absl::Status KvDrop(const std::string& job_id, int below_attempt);

  // "job-17" -> 17; 0 when malformed.
  static int64_t SeqOf(const std::string& job_id);

 private:
  explicit JobStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  void CheckpointLoop(std::unique_ptr<Database> db);
  absl::Status Migrate();
  absl::Status Prepare();
  absl::Status WriteRecord(const internal::JobRecord& record, bool insert)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendEvents(int64_t job_seq, std::vector<v1::JobEvent>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<internal::JobRecord>> GetBy(Statement* stmt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  absl::Mutex stop_mu_;
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread checkpointer_;
  std::unique_ptr<Statement> insert_job_, update_job_, insert_event_, get_job_, get_by_submission_,
      insert_metric_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::scheduler
