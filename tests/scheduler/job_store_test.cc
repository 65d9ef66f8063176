// JobStore: records and events are written atomically and survive reopening the file; submission
// ids are unique; listing pages and filters by state; metrics and key-value pairs round-trip; a
// store from a newer schema is refused.
#include "scheduler/job_store.h"

#include <sqlite3.h>

#include "tests/testing.h"

namespace kiln::scheduler {
namespace {

internal::JobRecord Record(int seq, v1::JobState state, const std::string& submission = "") {
  internal::JobRecord rec;
  rec.mutable_job()->set_id("job-" + std::to_string(seq));
  rec.mutable_job()->set_submission_id(submission);
  rec.mutable_job()->set_state(state);
  rec.mutable_job()->set_name("n" + std::to_string(seq));
  return rec;
}

v1::JobEvent Event(const std::string& job, const std::string& message) {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_message(message);
  return e;
}

TEST_CASE("records and events survive reopening the store", "[store]") {
  const std::string path = testing::TempDir("store_reopen") + "/kiln.db";
  {
    auto store = JobStore::Open(path);
    REQUIRE(store.ok());
    std::vector<v1::JobEvent> events = {Event("job-1", "submitted")};
    REQUIRE((*store)->Insert(Record(1, v1::QUEUED, "sub-a"), &events).ok());
    REQUIRE(events[0].seq() > 0);
    internal::JobRecord rec = Record(1, v1::RUNNING, "sub-a");
    std::vector<v1::JobEvent> more = {Event("job-1", "started"), Event("job-1", "running")};
    REQUIRE((*store)->Update(rec, &more).ok());
    REQUIRE(more[1].seq() > more[0].seq());
    REQUIRE(more[0].seq() > events[0].seq());
  }
  auto store = JobStore::Open(path);
  REQUIRE(store.ok());
  auto rec = (*store)->Get("job-1");
  REQUIRE(rec.ok());
  REQUIRE(rec->has_value());
  CHECK((*rec)->job().state() == v1::RUNNING);
  auto events = (*store)->Events("job-1", 0, 100);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 3);
  CHECK((*events)[2].message() == "running");
  auto max = (*store)->MaxJobSeq();
  REQUIRE(max.ok());
  CHECK(*max == 1);
  int64_t event_seq = 0, row = 0;
  REQUIRE((*store)->Cursors("job-1", &event_seq, &row).ok());
  CHECK(event_seq == (*events)[2].seq());
  CHECK(row == 0);
}

TEST_CASE("submission ids are unique and findable", "[store]") {
  auto store = JobStore::Open(testing::TempDir("store_sub") + "/kiln.db");
  REQUIRE(store.ok());
  REQUIRE((*store)->Insert(Record(1, v1::QUEUED, "same"), nullptr).ok());
  const absl::Status dup = (*store)->Insert(Record(2, v1::QUEUED, "same"), nullptr);
  CHECK(absl::IsAlreadyExists(dup));
  // Empty submission ids do not collide.
  REQUIRE((*store)->Insert(Record(3, v1::QUEUED), nullptr).ok());
  REQUIRE((*store)->Insert(Record(4, v1::QUEUED), nullptr).ok());
  auto found = (*store)->FindBySubmission("same");
  REQUIRE(found.ok());
  REQUIRE(found->has_value());
  CHECK((*found)->job().id() == "job-1");
  auto missing = (*store)->FindBySubmission("other");
  REQUIRE(missing.ok());
  CHECK_FALSE(missing->has_value());
}

TEST_CASE("listing pages and filters by state; active excludes finished jobs", "[store]") {
  auto store = JobStore::Open(testing::TempDir("store_list") + "/kiln.db");
  REQUIRE(store.ok());
  const v1::JobState states[] = {v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::QUEUED};
  for (int i = 0; i < 5; ++i) REQUIRE((*store)->Insert(Record(i + 1, states[i]), nullptr).ok());
  auto page = (*store)->List({}, 0, 2);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 2);
  CHECK(page->more);
  auto next = (*store)->List({}, page->last_seq, 10);
  REQUIRE(next.ok());
  CHECK(next->records.size() == 3);
  CHECK_FALSE(next->more);
  auto queued = (*store)->List({v1::QUEUED}, 0, 10);
  REQUIRE(queued.ok());
  REQUIRE(queued->records.size() == 2);
  CHECK(queued->records[1].job().id() == "job-5");
  auto active = (*store)->LoadActive();
  REQUIRE(active.ok());
  CHECK(active->size() == 3);
}

TEST_CASE("metrics and key-value pairs round-trip", "[store]") {
  auto store = JobStore::Open(testing::TempDir("store_metrics") + "/kiln.db");
  REQUIRE(store.ok());
  internal::JobRecord rec = Record(1, v1::RUNNING);
  REQUIRE((*store)->Insert(rec, nullptr).ok());
  std::vector<v1::MetricPoint> points(3);
  for (int i = 0; i < 3; ++i) {
    points[i].set_step(i + 1);
    points[i].set_loss(10.0 - i);
  }
  rec.mutable_job()->mutable_progress()->set_step(3);
  REQUIRE((*store)->AppendMetrics(rec, points).ok());
  auto after1 = (*store)->Metrics("job-1", 1, 0, 100);
  REQUIRE(after1.ok());
  REQUIRE(after1->size() == 2);
  CHECK((*after1)[0].point.loss() == 9.0);
  auto cursor = (*store)->Metrics("job-1", INT64_MIN, (*after1)[0].row, 100);
  REQUIRE(cursor.ok());
  CHECK(cursor->size() == 1);
  auto saved = (*store)->Get("job-1");
  REQUIRE(saved.ok());
  CHECK((*saved)->job().progress().step() == 3);

  REQUIRE((*store)->KvPut("job-1", 1, "addr/0", "10.0.0.1:99").ok());
  REQUIRE((*store)->KvPut("job-1", 2, "addr/0", "other").ok());
  auto kv = (*store)->KvLoad("job-1", 1);
  REQUIRE(kv.ok());
  CHECK(kv->at("addr/0") == "10.0.0.1:99");
  REQUIRE((*store)->KvDrop("job-1", 2).ok());
  CHECK((*store)->KvLoad("job-1", 1)->empty());
  CHECK((*store)->KvLoad("job-1", 2)->size() == 1);
}

TEST_CASE("a store written by a newer schema is refused", "[store]") {
  const std::string path = testing::TempDir("store_schema") + "/kiln.db";
  REQUIRE(JobStore::Open(path).ok());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  auto store = JobStore::Open(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().message().find("schema version 99") != std::string::npos);
}

TEST_CASE("job ids parse", "[store]") {
  CHECK(JobStore::SeqOf("job-17") == 17);
  CHECK(JobStore::SeqOf("job-0") == 0);
  CHECK(JobStore::SeqOf("job-x") == 0);
  CHECK(JobStore::SeqOf("17") == 0);
}

}  // namespace
}  // namespace kiln::scheduler
