// The SQLite schema and queries behind JobStore. Records and events are stored as serialized
// protos next to the few columns that queries filter on.
#include "scheduler/job_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status.h"

namespace kiln::scheduler {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  submission_id TEXT UNIQUE,
  state INTEGER NOT NULL,
  record BLOB NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_seq INTEGER NOT NULL REFERENCES jobs(seq),
  event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_seq, seq);
CREATE TABLE IF NOT EXISTS metrics (
  row INTEGER PRIMARY KEY AUTOINCREMENT,
  job_seq INTEGER NOT NULL REFERENCES jobs(seq),
  step INTEGER NOT NULL,
  point BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics(job_seq, row);
CREATE TABLE IF NOT EXISTS kv (
  job_seq INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (job_seq, attempt, key)
);
)sql";

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

bool IsTerminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

absl::StatusOr<internal::JobRecord> ParseRecord(const std::string& blob) {
  internal::JobRecord record;
  if (!record.ParseFromString(blob)) return absl::DataLossError("corrupt job record in the store");
  return record;
}

}  // namespace

int64_t JobStore::SeqOf(const std::string& job_id) {
  int64_t seq = 0;
  if (job_id.rfind("job-", 0) != 0 || !absl::SimpleAtoi(job_id.substr(4), &seq) || seq <= 0) {
    return 0;
  }
  return seq;
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path, bool full_sync) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, full_sync));
  std::unique_ptr<JobStore> store(new JobStore(std::move(db)));
  KILN_RETURN_IF_ERROR(store->Migrate());
  KILN_RETURN_IF_ERROR(store->Prepare());
  {
    absl::MutexLock lock(&store->mu_);
    KILN_RETURN_IF_ERROR(store->db_->Exec("PRAGMA wal_autocheckpoint = 0"));
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Database> checkpoint_db, Database::Open(path));
  JobStore* raw = store.get();
  store->checkpointer_ = std::thread(
      [raw, db = std::move(checkpoint_db)]() mutable { raw->CheckpointLoop(std::move(db)); });
  return store;
}

JobStore::~JobStore() {
  {
    absl::MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  if (checkpointer_.joinable()) checkpointer_.join();
}

void JobStore::CheckpointLoop(std::unique_ptr<Database> db) {
  auto stopping = [this] { return stop_; };
  while (true) {
    {
      absl::MutexLock lock(&stop_mu_);
      if (stop_mu_.AwaitWithTimeout(absl::Condition(&stopping), absl::Seconds(1))) break;
    }
    (void)db->Exec("PRAGMA wal_checkpoint(PASSIVE)");
  }
  (void)db->Exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

absl::Status JobStore::Migrate() {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(auto stmt, db_->Prepare("PRAGMA user_version"));
  KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
  const int64_t version = row ? stmt->Int(0) : 0;
  stmt.reset();
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the state store has schema version ",
                                                      version, ", newer than this kilnd's ",
                                                      kSchemaVersion, "; use a newer kilnd"));
  }
  if (version == kSchemaVersion) return absl::OkStatus();
  // Version 0 is an empty file: create everything. Later versions add migrations here.
  Transaction txn(db_.get());
  KILN_RETURN_IF_ERROR(txn.Begin());
  KILN_RETURN_IF_ERROR(db_->Exec(kSchema));
  KILN_RETURN_IF_ERROR(db_->Exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion)));
  return txn.Commit();
}

absl::Status JobStore::Prepare() {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(insert_job_,
                        db_->Prepare("INSERT INTO jobs (seq, id, submission_id, state, record, "
                                     "updated_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  KILN_ASSIGN_OR_RETURN(
      update_job_,
      db_->Prepare("UPDATE jobs SET state = ?, record = ?, updated_ms = ? WHERE seq = ?"));
  KILN_ASSIGN_OR_RETURN(insert_event_,
                        db_->Prepare("INSERT INTO events (job_seq, event) VALUES (?, ?)"));
  KILN_ASSIGN_OR_RETURN(get_job_, db_->Prepare("SELECT record FROM jobs WHERE seq = ?"));
  KILN_ASSIGN_OR_RETURN(get_by_submission_,
                        db_->Prepare("SELECT record FROM jobs WHERE submission_id = ?"));
  KILN_ASSIGN_OR_RETURN(
      insert_metric_, db_->Prepare("INSERT INTO metrics (job_seq, step, point) VALUES (?, ?, ?)"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JobStore::MaxJobSeq() {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(auto stmt, db_->Prepare("SELECT COALESCE(MAX(seq), 0) FROM jobs"));
  KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
  return row ? stmt->Int(0) : 0;
}

absl::Status JobStore::WriteRecord(const internal::JobRecord& record, bool insert) {
  const int64_t seq = SeqOf(record.job().id());
  if (seq == 0) return absl::InvalidArgumentError("malformed job id " + record.job().id());
  std::string blob;
  record.SerializeToString(&blob);
  if (insert) {
    insert_job_->Bind(1, seq).Bind(2, record.job().id());
    if (record.job().submission_id().empty()) {
      insert_job_->BindNull(3);
    } else {
      insert_job_->Bind(3, record.job().submission_id());
    }
    insert_job_->Bind(4, int64_t{record.job().state()}).BindBlob(5, blob).Bind(6, NowMs());
    absl::Status s = insert_job_->Run();
    if (!s.ok() && s.message().find("UNIQUE") != std::string::npos) {
      return absl::AlreadyExistsError(absl::StrCat(record.job().id(), " already exists"));
    }
    return s;
  }
  update_job_->Bind(1, int64_t{record.job().state()}).BindBlob(2, blob).Bind(3, NowMs());
  update_job_->Bind(4, seq);
  KILN_RETURN_IF_ERROR(update_job_->Run());
  if (db_->Changes() != 1) return absl::NotFoundError(record.job().id() + " is not in the store");
  return absl::OkStatus();
}

absl::Status JobStore::AppendEvents(int64_t job_seq, std::vector<v1::JobEvent>* events) {
  if (events == nullptr) return absl::OkStatus();
  for (v1::JobEvent& event : *events) {
    event.set_seq(0);
    insert_event_->Bind(1, job_seq).BindBlob(2, event.SerializeAsString());
    KILN_RETURN_IF_ERROR(insert_event_->Run());
    event.set_seq(db_->LastInsertRowId());
  }
  // The stored blobs lack their seq (it is the row id); readers fill it in.
  return absl::OkStatus();
}

absl::Status JobStore::Insert(const internal::JobRecord& record,
                              std::vector<v1::JobEvent>* events) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_.get());
  KILN_RETURN_IF_ERROR(txn.Begin());
  KILN_RETURN_IF_ERROR(WriteRecord(record, /*insert=*/true));
  KILN_RETURN_IF_ERROR(AppendEvents(SeqOf(record.job().id()), events));
  return txn.Commit();
}

absl::Status JobStore::Update(const internal::JobRecord& record,
                              std::vector<v1::JobEvent>* events) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_.get());
  KILN_RETURN_IF_ERROR(txn.Begin());
  KILN_RETURN_IF_ERROR(WriteRecord(record, /*insert=*/false));
  KILN_RETURN_IF_ERROR(AppendEvents(SeqOf(record.job().id()), events));
  return txn.Commit();
}

absl::Status JobStore::AppendMetrics(const internal::JobRecord& record,
                                     const std::vector<v1::MetricPoint>& points) {
  absl::MutexLock lock(&mu_);
  const int64_t seq = SeqOf(record.job().id());
  Transaction txn(db_.get());
  KILN_RETURN_IF_ERROR(txn.Begin());
  for (const v1::MetricPoint& point : points) {
    insert_metric_->Bind(1, seq).Bind(2, point.step()).BindBlob(3, point.SerializeAsString());
    KILN_RETURN_IF_ERROR(insert_metric_->Run());
  }
  KILN_RETURN_IF_ERROR(WriteRecord(record, /*insert=*/false));
  return txn.Commit();
}

absl::StatusOr<std::optional<internal::JobRecord>> JobStore::GetBy(Statement* stmt) {
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok() || !*row) {
    stmt->Reset();
    if (!row.ok()) return row.status();
    return std::nullopt;
  }
  absl::StatusOr<internal::JobRecord> record = ParseRecord(stmt->Blob(0));
  stmt->Reset();
  if (!record.ok()) return record.status();
  return std::optional<internal::JobRecord>(*std::move(record));
}

absl::StatusOr<std::optional<internal::JobRecord>> JobStore::Get(const std::string& job_id) {
  const int64_t seq = SeqOf(job_id);
  if (seq == 0) return std::nullopt;
  absl::MutexLock lock(&mu_);
  get_job_->Bind(1, seq);
  return GetBy(get_job_.get());
}

absl::StatusOr<std::optional<internal::JobRecord>> JobStore::FindBySubmission(
    const std::string& submission_id) {
  absl::MutexLock lock(&mu_);
  get_by_submission_->Bind(1, submission_id);
  return GetBy(get_by_submission_.get());
}

absl::StatusOr<std::vector<internal::JobRecord>> JobStore::LoadActive() {
  std::vector<internal::JobRecord> out;
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt,
      db_->Prepare(absl::StrCat("SELECT record FROM jobs WHERE state NOT IN (", int{v1::SUCCEEDED},
                                ",", int{v1::FAILED}, ",", int{v1::CANCELLED}, ") ORDER BY seq")));
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) break;
    KILN_ASSIGN_OR_RETURN(internal::JobRecord record, ParseRecord(stmt->Blob(0)));
    if (!IsTerminal(record.job().state())) out.push_back(std::move(record));
  }
  return out;
}

absl::StatusOr<JobStore::Page> JobStore::List(const std::vector<v1::JobState>& states,
                                              int64_t after_seq, int limit) {
  std::string sql = "SELECT seq, record FROM jobs WHERE seq > ?";
  if (!states.empty()) {
    std::vector<int> codes(states.begin(), states.end());
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(codes, ","), ")");
  }
  absl::StrAppend(&sql, " ORDER BY seq LIMIT ?");
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(auto stmt, db_->Prepare(sql));
  stmt->Bind(1, after_seq).Bind(2, int64_t{limit} + 1);
  Page page;
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) break;
    if (static_cast<int>(page.records.size()) == limit) {
      page.more = true;
      break;
    }
    page.last_seq = stmt->Int(0);
    KILN_ASSIGN_OR_RETURN(internal::JobRecord record, ParseRecord(stmt->Blob(1)));
    page.records.push_back(std::move(record));
  }
  return page;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(const std::string& job_id,
                                                           int64_t after_seq, int limit) {
  std::vector<v1::JobEvent> out;
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt,
      db_->Prepare("SELECT seq, event FROM events WHERE job_seq = ? AND seq > ? ORDER BY seq "
                   "LIMIT ?"));
  stmt->Bind(1, SeqOf(job_id)).Bind(2, after_seq).Bind(3, int64_t{limit});
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) break;
    v1::JobEvent event;
    if (!event.ParseFromString(stmt->Blob(1))) return absl::DataLossError("corrupt event");
    event.set_seq(stmt->Int(0));
    out.push_back(std::move(event));
  }
  return out;
}

absl::StatusOr<std::vector<JobStore::MetricRow>> JobStore::Metrics(const std::string& job_id,
                                                                   int64_t after_step,
                                                                   int64_t after_row, int limit) {
  std::vector<MetricRow> out;
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt, db_->Prepare("SELECT row, point FROM metrics WHERE job_seq = ? AND step > ? AND "
                              "row > ? ORDER BY row LIMIT ?"));
  stmt->Bind(1, SeqOf(job_id)).Bind(2, after_step).Bind(3, after_row).Bind(4, int64_t{limit});
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) break;
    MetricRow metric;
    metric.row = stmt->Int(0);
    if (!metric.point.ParseFromString(stmt->Blob(1))) return absl::DataLossError("corrupt metric");
    out.push_back(std::move(metric));
  }
  return out;
}

absl::StatusOr<std::optional<v1::MetricPoint>> JobStore::LastMetric(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt,
      db_->Prepare("SELECT point FROM metrics WHERE job_seq = ? ORDER BY row DESC LIMIT 1"));
  stmt->Bind(1, SeqOf(job_id));
  KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return std::optional<v1::MetricPoint>();
  v1::MetricPoint point;
  if (!point.ParseFromString(stmt->Blob(0))) return absl::DataLossError("corrupt metric");
  return std::optional<v1::MetricPoint>(std::move(point));
}

absl::Status JobStore::Cursors(const std::string& job_id, int64_t* event_seq, int64_t* metric_row) {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt,
      db_->Prepare("SELECT (SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_seq = ?1), "
                   "(SELECT COALESCE(MAX(row), 0) FROM metrics WHERE job_seq = ?1)"));
  stmt->Bind(1, SeqOf(job_id));
  KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
  *event_seq = row ? stmt->Int(0) : 0;
  *metric_row = row ? stmt->Int(1) : 0;
  return absl::OkStatus();
}

absl::Status JobStore::KvPut(const std::string& job_id, int attempt, const std::string& key,
                             const std::string& value) {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt,
      db_->Prepare("INSERT OR REPLACE INTO kv (job_seq, attempt, key, value) VALUES (?, ?, ?, ?)"));
  stmt->Bind(1, SeqOf(job_id)).Bind(2, int64_t{attempt}).Bind(3, key).BindBlob(4, value);
  return stmt->Run();
}

absl::StatusOr<std::map<std::string, std::string>> JobStore::KvLoad(const std::string& job_id,
                                                                    int attempt) {
  std::map<std::string, std::string> out;
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(
      auto stmt, db_->Prepare("SELECT key, value FROM kv WHERE job_seq = ? AND attempt = ?"));
  stmt->Bind(1, SeqOf(job_id)).Bind(2, int64_t{attempt});
  while (true) {
    KILN_ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) break;
    out[stmt->Text(0)] = stmt->Blob(1);
  }
  return out;
}

absl::Status JobStore::KvDrop(const std::string& job_id, int below_attempt) {
  absl::MutexLock lock(&mu_);
  KILN_ASSIGN_OR_RETURN(auto stmt,
                        db_->Prepare("DELETE FROM kv WHERE job_seq = ? AND attempt < ?"));
  stmt->Bind(1, SeqOf(job_id)).Bind(2, int64_t{below_attempt});
  return stmt->Run();
}

}  // namespace kiln::scheduler
