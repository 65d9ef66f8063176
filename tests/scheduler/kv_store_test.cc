// The rendezvous key-value store: scoping per job and attempt, Add, Wait (woken by Set, timing out,
// cancellable), limits, and reloading from the JobStore after a restart.
#include "scheduler/kv_store.h"

#include <thread>

#include "tests/testing.h"

namespace kiln::scheduler {
namespace {

TEST_CASE("keys are scoped per job and attempt", "[kv]") {
  auto store = JobStore::Open(testing::TempDir("kv_scope") + "/kiln.db");
  REQUIRE(store.ok());
  KvStore kv(store->get());
  REQUIRE(kv.Set("job-1", 1, "k", "v1").ok());
  REQUIRE(kv.Set("job-1", 2, "k", "v2").ok());
  CHECK(*kv.Get("job-1", 1, "k") == "v1");
  CHECK(*kv.Get("job-1", 2, "k") == "v2");
  CHECK(absl::IsNotFound(kv.Get("job-2", 1, "k").status()));
  kv.Drop("job-1", 2);
  CHECK(absl::IsNotFound(kv.Get("job-1", 1, "k").status()));
  CHECK(*kv.Get("job-1", 2, "k") == "v2");
}

TEST_CASE("add counts and refuses non-integers", "[kv]") {
  auto store = JobStore::Open(testing::TempDir("kv_add") + "/kiln.db");
  REQUIRE(store.ok());
  KvStore kv(store->get());
  CHECK(*kv.Add("job-1", 1, "n", 1) == 1);
  CHECK(*kv.Add("job-1", 1, "n", 5) == 6);
  CHECK(*kv.Get("job-1", 1, "n") == "6");
  REQUIRE(kv.Set("job-1", 1, "s", "text").ok());
  CHECK(absl::IsFailedPrecondition(kv.Add("job-1", 1, "s", 1).status()));
}

TEST_CASE("wait wakes on set, times out, and can be cancelled", "[kv]") {
  auto store = JobStore::Open(testing::TempDir("kv_wait") + "/kiln.db");
  REQUIRE(store.ok());
  KvStore kv(store->get());
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (void)kv.Set("job-1", 1, "a", "1");
    (void)kv.Set("job-1", 1, "b", "2");
  });
  const absl::Time start = absl::Now();
  CHECK(kv.Wait("job-1", 1, {"a", "b"}, absl::Seconds(5), nullptr).ok());
  CHECK(absl::Now() - start < absl::Seconds(2));
  setter.join();
  CHECK(
      absl::IsDeadlineExceeded(kv.Wait("job-1", 1, {"missing"}, absl::Milliseconds(50), nullptr)));
  CHECK(absl::IsCancelled(kv.Wait("job-1", 1, {"missing"}, absl::Seconds(5), [] { return true; })));
}

TEST_CASE("inputs are bounded", "[kv]") {
  auto store = JobStore::Open(testing::TempDir("kv_limits") + "/kiln.db");
  REQUIRE(store.ok());
  KvStore kv(store->get());
  CHECK(absl::IsInvalidArgument(kv.Set("job-1", 1, "", "v")));
  CHECK(absl::IsInvalidArgument(kv.Set("job-1", 1, std::string(300, 'k'), "v")));
  CHECK(absl::IsInvalidArgument(kv.Set("job-1", 1, "k", std::string(2 << 20, 'v'))));
  CHECK(absl::IsInvalidArgument(kv.Wait("job-1", 1, {}, absl::Seconds(1), nullptr)));
}

TEST_CASE("keys survive a restart through the job store", "[kv]") {
  const std::string path = testing::TempDir("kv_reload") + "/kiln.db";
  {
    auto store = JobStore::Open(path);
    REQUIRE(store.ok());
    KvStore kv(store->get());
    REQUIRE(kv.Set("job-3", 2, "nccl_id", std::string("\0\1\2", 3)).ok());
  }
  auto store = JobStore::Open(path);
  REQUIRE(store.ok());
  KvStore kv(store->get());
  REQUIRE(kv.Load("job-3", 2).ok());
  CHECK(*kv.Get("job-3", 2, "nccl_id") == std::string("\0\1\2", 3));
}

}  // namespace
}  // namespace kiln::scheduler
