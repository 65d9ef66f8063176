// The Gloo backend between real processes: this test hosts a TcpStore on an OS-chosen port and
// starts one dist_test_worker process per rank. Covers the conformance suite for worlds 1-4,
// bit-identical results across two separate launches, and a rank killed (SIGKILL) or frozen
// (SIGSTOP) in the middle of a stream of all-reduces.
#include <signal.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/dist/process.h"
#include "engine/dist/tcp_store.h"
#include "tests/testing.h"

namespace kiln::dist {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A launched world: the store the ranks meet in and one process per rank.
struct World {
  std::unique_ptr<TcpStore> store;
  std::vector<Process> ranks;
  std::vector<std::string> logs;

  std::string Logs() const {
    std::string all;
    for (size_t r = 0; r < logs.size(); ++r) {
      absl::StrAppend(&all, "--- rank ", r, " ---\n", ReadFile(logs[r]));
    }
    return all;
  }
};

World Launch(int world, const std::string& mode, const std::vector<std::string>& extra = {}) {
  World w;
  TcpStoreOptions options;
  options.is_host = true;  // port 0: the OS chooses
  auto store = TcpStore::Create(options);
  REQUIRE(store.ok());
  w.store = std::move(*store);
  const std::string worker = testing::Runfile("tests/engine/dist/dist_test_worker");
  const std::string dir = testing::TempDir(absl::StrCat(mode, "_", world, "_", w.store->port()));
  for (int r = 0; r < world; ++r) {
    ProcessOptions p;
    p.argv = {worker, "--mode=" + mode, absl::StrCat("--rank=", r), absl::StrCat("--world=", world),
              absl::StrCat("--port=", w.store->port())};
    p.argv.insert(p.argv.end(), extra.begin(), extra.end());
    p.output_path = absl::StrCat(dir, "/rank", r, ".log");
    w.logs.push_back(p.output_path);
    auto process = Process::Spawn(p);
    REQUIRE(process.ok());
    w.ranks.push_back(std::move(*process));
  }
  return w;
}

// Waits for every rank and requires exit code 0 from each.
void RequireAllSucceed(World& w, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t r = 0; r < w.ranks.size(); ++r) {
    absl::StatusOr<int> code = w.ranks[r].Wait(deadline - absl::Now());
    INFO("rank " << r << ": "
                 << (code.ok() ? absl::StrCat("exit ", *code) : code.status().ToString()) << "\n"
                 << w.Logs());
    REQUIRE(code.ok());
    REQUIRE(*code == 0);
  }
}

TEST_CASE("Gloo conformance across processes, worlds 1-4, sizes up to 1000003", "[dist][gloo]") {
  for (int world : {1, 2, 3, 4}) {
    INFO("world " << world);
    World w = Launch(world, "conformance");
    RequireAllSucceed(w, absl::Seconds(600));
    for (const std::string& log : w.logs) CHECK(absl::StrContains(ReadFile(log), " 0 failures"));
  }
}

TEST_CASE("Gloo results are bit-identical across two separate launches", "[dist][gloo]") {
  const int world = 3;
  std::vector<std::string> digests[2];
  for (auto& run : digests) {
    World w = Launch(world, "digest");
    RequireAllSucceed(w, absl::Seconds(300));
    for (int r = 0; r < world; ++r) {
      auto digest = w.store->Get(absl::StrCat("digest/", r), absl::Seconds(5));
      REQUIRE(digest.ok());
      run.push_back(*digest);
    }
  }
  INFO("first launch: " << digests[0][0] << " " << digests[0][1] << " " << digests[0][2]);
  REQUIRE(digests[0] == digests[1]);
}

// Starts a world of 3 looping on all-reduces, applies `signal` to rank 1 once every rank is in
// the loop, and checks what ranks 0 and 2 report.
void CheckPeerFailure(int signal, const std::string& expected_code_text) {
  const int world = 3, victim = 1;
  const absl::Duration timeout = absl::Seconds(3);
  World w =
      Launch(world, "failure", {absl::StrCat("--timeout_ms=", absl::ToInt64Milliseconds(timeout))});
  // Wait until every rank finished one all-reduce, then let the stream run a little.
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  int64_t running = 0;
  while (absl::Now() < deadline) {
    auto count = w.store->Add("running", 0);
    REQUIRE(count.ok());
    running = *count;
    if (running == world) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  INFO(w.Logs());
  REQUIRE(running == world);
  absl::SleepFor(absl::Milliseconds(300));
  REQUIRE(w.ranks[victim].Signal(signal).ok());

  for (int r : {0, 2}) {
    absl::StatusOr<int> code = w.ranks[r].Wait(timeout + absl::Seconds(60));
    INFO("rank " << r << "\n" << w.Logs());
    REQUIRE(code.ok());
    REQUIRE(*code == 0);
    auto error = w.store->Get(absl::StrCat("error/", r), absl::Seconds(5));
    auto error_ms = w.store->Get(absl::StrCat("error_ms/", r), absl::Seconds(5));
    auto next = w.store->Get(absl::StrCat("next/", r), absl::Seconds(5));
    auto next_ms = w.store->Get(absl::StrCat("next_ms/", r), absl::Seconds(5));
    REQUIRE((error.ok() && error_ms.ok() && next.ok() && next_ms.ok()));
    INFO("error: " << *error << " after " << *error_ms << " ms; next: " << *next);
    // Names the collective, this rank and a sequence number.
    CHECK(absl::StrContains(*error, "AllReduce #"));
    CHECK(absl::StrContains(*error, absl::StrCat(" on rank ", r, " of 3 (gloo")));
    int64_t ms = 0, fast_ms = 0;
    REQUIRE(absl::SimpleAtoi(*error_ms, &ms));
    REQUIRE(absl::SimpleAtoi(*next_ms, &fast_ms));
    CHECK(ms < absl::ToInt64Milliseconds(timeout) + 2000);  // within the timeout (+ slack)
    CHECK(absl::StrContains(*next, "failed earlier"));      // poisoned: later ops fail fast
    CHECK(fast_ms < 1000);
  }
  // At least one survivor saw the cause itself (the other may see the first one's abort).
  const std::string both = absl::StrCat(*w.store->Get("error/0", absl::Seconds(1)),
                                        *w.store->Get("error/2", absl::Seconds(1)));
  INFO(both);
  CHECK(absl::StrContains(both, expected_code_text));
}

TEST_CASE("Gloo: a rank killed mid-collective fails its peers fast, naming the op",
          "[dist][gloo]") {
  CheckPeerFailure(SIGKILL, "UNAVAILABLE");
}

TEST_CASE("Gloo: a frozen rank (SIGSTOP) fails its peers within the timeout", "[dist][gloo]") {
  CheckPeerFailure(SIGSTOP, "DEADLINE_EXCEEDED");
}

}  // namespace
}  // namespace kiln::dist
