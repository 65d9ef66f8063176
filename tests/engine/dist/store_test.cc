// Store conformance, run against InProcessStore and TcpStore (one hosting client plus others that
// connect to it): blocking Get, timeouts that name the key, atomic Add under contention, Wait,
// binary values, prefixes. Then TcpStore-only behaviour: connect retry, a dead host surfacing as
// an error, and a server that survives garbage.
#include "engine/dist/store.h"

#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/dist/process.h"
#include "engine/dist/socket_util.h"
#include "engine/dist/tcp_store.h"
#include "tests/testing.h"

namespace kiln::dist {
namespace {

// `count` handles on one logical store: the same InProcessStore, or TcpStore clients of one host.
struct Stores {
  std::unique_ptr<InProcessStore> shared;
  std::vector<std::unique_ptr<TcpStore>> tcp;
  std::vector<Store*> handles;
};

Stores MakeStores(const std::string& kind, int count) {
  Stores s;
  if (kind == "inprocess") {
    s.shared = std::make_unique<InProcessStore>();
    for (int i = 0; i < count; ++i) s.handles.push_back(s.shared.get());
    return s;
  }
  TcpStoreOptions host;
  host.is_host = true;
  auto made = TcpStore::Create(host);
  REQUIRE(made.ok());
  s.tcp.push_back(std::move(*made));
  for (int i = 1; i < count; ++i) {
    TcpStoreOptions client;
    client.port = s.tcp[0]->port();
    auto c = TcpStore::Create(client);
    REQUIRE(c.ok());
    s.tcp.push_back(std::move(*c));
  }
  for (auto& t : s.tcp) s.handles.push_back(t.get());
  return s;
}

TEST_CASE("store: Get before Set blocks, then returns the value", "[dist][store]") {
  for (const std::string kind : {"inprocess", "tcp"}) {
    INFO(kind);
    Stores s = MakeStores(kind, 2);
    std::atomic<bool> returned{false};
    absl::StatusOr<std::string> got;
    std::thread getter([&] {
      got = s.handles[0]->Get("late/key", absl::Seconds(30));
      returned = true;
    });
    absl::SleepFor(absl::Milliseconds(200));
    CHECK_FALSE(returned.load());
    const std::string binary("v\0\xff x", 5);
    REQUIRE(s.handles[1]->Set("late/key", binary).ok());
    getter.join();
    REQUIRE(got.ok());
    CHECK(*got == binary);
  }
}

TEST_CASE("store: a Get that times out names the key", "[dist][store]") {
  for (const std::string kind : {"inprocess", "tcp"}) {
    INFO(kind);
    Stores s = MakeStores(kind, 1);
    const absl::Time start = absl::Now();
    auto got = s.handles[0]->Get("never/set", absl::Milliseconds(300));
    const absl::Duration took = absl::Now() - start;
    INFO(got.status());
    REQUIRE(absl::IsDeadlineExceeded(got.status()));
    CHECK(absl::StrContains(got.status().message(), "'never/set'"));
    CHECK(took >= absl::Milliseconds(290));
    CHECK(took < absl::Seconds(3));
    // The store still works after a timed-out Get (TcpStore dropped that connection).
    REQUIRE(s.handles[0]->Set("after", "x").ok());
    CHECK(*s.handles[0]->Get("after", absl::Seconds(5)) == "x");
  }
}

TEST_CASE("store: Add is atomic under contention", "[dist][store]") {
  for (const std::string kind : {"inprocess", "tcp"}) {
    INFO(kind);
    const int clients = 4, threads_per_client = 4, adds = 100;
    Stores s = MakeStores(kind, clients);
    std::vector<std::vector<int64_t>> seen(clients * threads_per_client);
    std::vector<std::thread> threads;
    for (int t = 0; t < clients * threads_per_client; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < adds; ++i) {
          auto v = s.handles[t % clients]->Add("counter", 1);
          seen[t].push_back(v.ok() ? *v : -1);
        }
      });
    }
    for (auto& t : threads) t.join();
    std::set<int64_t> values;
    for (const auto& v : seen) values.insert(v.begin(), v.end());
    const int64_t total = clients * threads_per_client * adds;
    // Every increment returned a distinct value: exactly 1..total.
    CHECK(static_cast<int64_t>(values.size()) == total);
    CHECK(*values.begin() == 1);
    CHECK(*values.rbegin() == total);
    CHECK(*s.handles[0]->Get("counter", absl::Seconds(1)) == absl::StrCat(total));
    CHECK(*s.handles[1 % clients]->Add("counter", -total) == 0);
    REQUIRE(s.handles[0]->Set("text", "abc").ok());
    CHECK(absl::IsFailedPrecondition(s.handles[0]->Add("text", 1).status()));
  }
}

TEST_CASE("store: Wait, large binary values and prefixes", "[dist][store]") {
  for (const std::string kind : {"inprocess", "tcp"}) {
    INFO(kind);
    Stores s = MakeStores(kind, 2);
    std::string big(1 << 20, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) & 0xff);
    std::thread setter([&] {
      absl::SleepFor(absl::Milliseconds(100));
      (void)s.handles[1]->Set("a", big);
      (void)s.handles[1]->Set("b", "");
    });
    CHECK(s.handles[0]->Wait({"a", "b"}, absl::Seconds(30)).ok());
    setter.join();
    CHECK(*s.handles[0]->Get("a", absl::Seconds(1)) == big);
    CHECK(s.handles[0]->Get("b", absl::Seconds(1))->empty());
    auto missing = s.handles[0]->Wait({"a", "zzz"}, absl::Milliseconds(200));
    CHECK(absl::StrContains(missing.message(), "'zzz'"));

    PrefixStore scoped(s.handles[0], JobScope("job-7", 2));
    REQUIRE(scoped.Set("k", "v").ok());
    CHECK(*s.handles[1]->Get("job/job-7/attempt/2/k", absl::Seconds(1)) == "v");
    CHECK(absl::IsDeadlineExceeded(s.handles[1]->Get("k", absl::Milliseconds(50)).status()));
  }
}

TEST_CASE("tcp store: a client started before its host retries until the host is up",
          "[dist][store]") {
  int port = 0;
  {
    TcpStoreOptions probe;
    probe.is_host = true;
    auto s = TcpStore::Create(probe);
    REQUIRE(s.ok());
    port = (*s)->port();
  }  // closed: nothing listens on `port` now
  absl::StatusOr<std::unique_ptr<TcpStore>> client;
  std::thread connecting([&] {
    TcpStoreOptions options;
    options.port = port;
    options.connect_timeout = absl::Seconds(20);
    client = TcpStore::Create(options);
  });
  absl::SleepFor(absl::Milliseconds(400));
  TcpStoreOptions host;
  host.is_host = true;
  host.port = port;
  auto server = TcpStore::Create(host);
  REQUIRE(server.ok());
  connecting.join();
  INFO(client.status());
  REQUIRE(client.ok());
  REQUIRE((*server)->Set("hello", "world").ok());
  CHECK(*(*client)->Get("hello", absl::Seconds(5)) == "world");
}

TEST_CASE("tcp store: no host within the connect timeout is an error", "[dist][store]") {
  TcpStoreOptions options;
  options.port = 1;  // nothing listens on a privileged port here
  options.connect_timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  auto client = TcpStore::Create(options);
  INFO(client.status());
  REQUIRE(absl::IsUnavailable(client.status()));
  CHECK(absl::Now() - start < absl::Seconds(5));
}

TEST_CASE("tcp store: the host's death surfaces as an error, not a hang", "[dist][store]") {
  // The host is another process so that it can really die (SIGKILL).
  const std::string dir = testing::TempDir("store_host");
  ProcessOptions p;
  p.argv = {testing::Runfile("tests/engine/dist/dist_test_worker"), "--mode=store_host"};
  p.output_path = dir + "/host.log";
  auto host = Process::Spawn(p);
  REQUIRE(host.ok());
  int port = 0;
  for (int i = 0; i < 1000 && port == 0; ++i) {
    std::ifstream log(p.output_path);
    std::string line;
    if (std::getline(log, line) && absl::StartsWith(line, "port=")) {
      REQUIRE(absl::SimpleAtoi(line.substr(5), &port));
    } else {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  REQUIRE(port > 0);
  TcpStoreOptions options;
  options.port = port;
  auto client = TcpStore::Create(options);
  REQUIRE(client.ok());
  REQUIRE((*client)->Set("alive", "1").ok());

  absl::StatusOr<std::string> blocked;
  absl::Duration took;
  std::thread getter([&] {
    const absl::Time start = absl::Now();
    blocked = (*client)->Get("never", absl::Seconds(60));
    took = absl::Now() - start;
  });
  absl::SleepFor(absl::Milliseconds(300));
  REQUIRE(host->Signal(SIGKILL).ok());
  REQUIRE(host->Wait(absl::Seconds(10)).ok());
  getter.join();
  INFO(blocked.status());
  CHECK(absl::IsUnavailable(blocked.status()));
  CHECK(took < absl::Seconds(10));
  // Later calls fail at once too (Note [Store host death]).
  const absl::Time start = absl::Now();
  const absl::Status set = (*client)->Set("after", "x");
  INFO(set);
  CHECK(absl::IsUnavailable(set));
  CHECK(absl::Now() - start < absl::Seconds(2));
}

TEST_CASE("tcp store: the server drops clients that send garbage and keeps serving",
          "[dist][store]") {
  TcpStoreOptions host;
  host.is_host = true;
  auto server = TcpStore::Create(host);
  REQUIRE(server.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  for (const std::string& garbage :
       {std::string("\xff\xff\xff\xff", 4),                         // a 4 GiB frame
        std::string("\x03\x00\x00\x00\x07\x01\x02", 7),             // unknown op
        std::string("\x05\x00\x00\x00\x01\xff\xff\xff\xff", 9)}) {  // key longer than frame
    auto fd = net::ConnectOnce("127.0.0.1", (*server)->port(), deadline);
    REQUIRE(fd.ok());
    REQUIRE(net::WriteAll(fd->get(), garbage.data(), garbage.size(), deadline, "server").ok());
    char byte;
    // The server answers garbage by closing the connection.
    const absl::Status read = net::ReadAll(fd->get(), &byte, 1, deadline, "server");
    INFO(read);
    CHECK(absl::IsUnavailable(read));
  }
  REQUIRE((*server)->Set("still", "here").ok());
  CHECK(*(*server)->Get("still", absl::Seconds(1)) == "here");
}

}  // namespace
}  // namespace kiln::dist
