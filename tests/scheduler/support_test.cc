// kilnd's support pieces: tokens and token files, the Prometheus rendering, flag parsing, log file
// chunks, and the launcher (process groups, log capture, reaping, identity by start time).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "scheduler/auth.h"
#include "scheduler/config.h"
#include "scheduler/launcher.h"
#include "scheduler/log_files.h"
#include "scheduler/metrics.h"
#include "tests/testing.h"

namespace kiln::scheduler {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_CASE("tokens: minting, comparison and token files", "[auth]") {
  const std::string a = MintToken(), b = MintToken();
  CHECK(a.size() == 64);
  CHECK(a != b);
  CHECK(TokensEqual(a, a));
  CHECK_FALSE(TokensEqual(a, b));
  CHECK_FALSE(TokensEqual("", ""));
  const std::string dir = testing::TempDir("auth");
  const std::string file = dir + "/token";
  std::ofstream(file) << "  secret-token \n";
  chmod(file.c_str(), 0644);
  CHECK(absl::IsPermissionDenied(ReadTokenFile(file).status()));
  chmod(file.c_str(), 0600);
  auto token = ReadTokenFile(file);
  REQUIRE(token.ok());
  CHECK(*token == "secret-token");
  CHECK(absl::IsNotFound(ReadTokenFile(dir + "/missing").status()));
}

TEST_CASE("metrics render in the Prometheus text format", "[metrics]") {
  Metrics metrics({"SubmitJob", "Heartbeat"});
  metrics.ObserveRpc("SubmitJob", 0.0003, 0);
  metrics.ObserveRpc("SubmitJob", 0.2, 3);
  metrics.CountRestart();
  ClusterGauges g;
  g.jobs_by_state["RUNNING"] = 2;
  g.queue_length = 5;
  g.live_workers = 4;
  const std::string text = metrics.Render(g);
  CHECK(text.find("kiln_jobs{state=\"RUNNING\"} 2\n") != std::string::npos);
  CHECK(text.find("kiln_queue_length 5\n") != std::string::npos);
  CHECK(text.find("kiln_live_workers 4\n") != std::string::npos);
  CHECK(text.find("kiln_restarts_total 1\n") != std::string::npos);
  CHECK(text.find("kiln_rpc_duration_seconds_bucket{method=\"SubmitJob\",le=\"0.0005\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("kiln_rpc_duration_seconds_count{method=\"SubmitJob\"} 2\n") !=
        std::string::npos);
  CHECK(text.find("kiln_rpcs_total{method=\"SubmitJob\",code=\"INVALID_ARGUMENT\"} 1\n") !=
        std::string::npos);
}

TEST_CASE("kilnd flags: defaults and errors", "[config]") {
  auto parse = [](std::vector<std::string> w) {
    std::vector<char*> argv;
    for (std::string& s : w) argv.push_back(s.data());
    return ParseKilndFlags(static_cast<int>(argv.size()), argv.data());
  };
  auto c = parse({"kilnd"});
  REQUIRE(c.ok());
  CHECK(c->listen == "127.0.0.1:7070");
  CHECK(c->state_dir.size() >= 5);
  CHECK(c->state_dir.substr(c->state_dir.size() - 5) == ".kiln");
  CHECK_FALSE(c->slots_given);
  c = parse({"kilnd", "--listen=0.0.0.0:0", "--slots", "3", "--grace-s", "2.5"});
  REQUIRE(c.ok());
  CHECK(c->slots == 3);
  CHECK(c->grace_s == 2.5);
  CHECK(absl::IsInvalidArgument(parse({"kilnd", "--slot", "3"}).status()));
  CHECK(absl::IsInvalidArgument(parse({"kilnd", "--listen", "nohost"}).status()));
  CHECK(absl::IsInvalidArgument(parse({"kilnd", "--tls-cert", "x"}).status()));
  CHECK(absl::IsNotFound(parse({"kilnd", "--help"}).status()));
  CHECK(c->full_sync);
  auto n = parse({"kilnd", "--sync", "normal"});
  REQUIRE(n.ok());
  CHECK_FALSE(n->full_sync);
  CHECK(absl::IsInvalidArgument(parse({"kilnd", "--sync", "off"}).status()));
}

TEST_CASE("log chunks: offsets and whole lines", "[logs]") {
  const std::string path = testing::TempDir("logs") + "/rank-0.log";
  std::ofstream(path) << "one\ntwo\nthr";
  CHECK(*ReadLogChunk(path, 0, 100, false) == "one\ntwo\nthr");
  CHECK(*ReadLogChunk(path, 0, 100, true) == "one\ntwo\n");
  CHECK(*ReadLogChunk(path, 4, 100, true) == "two\n");
  CHECK(*ReadLogChunk(path, 8, 100, true) == "");  // a partial line waits for its end
  CHECK(*ReadLogChunk(path, 0, 5, true) == "one\n");
  CHECK(*ReadLogChunk(path + ".missing", 0, 5, true) == "");
}

TEST_CASE("the launcher captures output, leads a process group and reaps", "[launcher]") {
  const std::string dir = testing::TempDir("launcher");
  LaunchRequest request;
  request.binary = "/bin/sh";
  request.args = {"-c", "echo out; echo err 1>&2; echo $KILN_X; exit 3"};
  request.env = {"KILN_X=from-env"};
  request.log_path = dir + "/rank-0.log";
  request.header = "==== header ====";
  auto launched = Launch(request);
  REQUIRE(launched.ok());
  CHECK(launched->start_time > 0);
  std::vector<Exited> exited;
  for (int i = 0; i < 100 && exited.empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    exited = ReapExited();
  }
  REQUIRE(exited.size() == 1);
  CHECK(exited[0].pid == launched->pid);
  CHECK(exited[0].exit_code == 3);
  CHECK(ReadAll(request.log_path) == "==== header ====\nout\nerr\nfrom-env\n");
  CHECK_FALSE(ProcessAlive(launched->pid, launched->start_time));
}

TEST_CASE("signalling the group stops the worker's children too", "[launcher]") {
  const std::string dir = testing::TempDir("launcher_group");
  LaunchRequest request;
  request.binary = "/bin/sh";
  request.args = {"-c", "sleep 60 & echo $! > " + dir + "/child; wait"};
  request.log_path = dir + "/rank-0.log";
  auto launched = Launch(request);
  REQUIRE(launched.ok());
  pid_t child = 0;
  for (int i = 0; i < 100 && child == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    std::ifstream(dir + "/child") >> child;
  }
  REQUIRE(child > 0);
  CHECK(getpgid(child) == launched->pid);
  CHECK(ProcessAlive(launched->pid, launched->start_time));
  CHECK_FALSE(ProcessAlive(launched->pid, launched->start_time + 1));  // identity check
  SignalGroup(launched->pid, launched->start_time, SIGKILL);
  std::vector<Exited> exited;
  for (int i = 0; i < 100 && exited.empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    exited = ReapExited();
  }
  REQUIRE(exited.size() == 1);
  CHECK(exited[0].signal == SIGKILL);
  bool child_gone = false;
  for (int i = 0; i < 100 && !child_gone; ++i) {
    child_gone = !ProcessAlive(child, 0);
    absl::SleepFor(absl::Milliseconds(20));
  }
  CHECK(child_gone);
}

}  // namespace
}  // namespace kiln::scheduler
