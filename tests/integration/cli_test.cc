// The `kiln` CLI as users run it, against a real kilnd running real training jobs: --json on every
// verb, one-line errors with field paths, "cannot reach kilnd", --follow's exit code equal to the
// job's outcome (a real success, and a real failure: bad data), the table views, and --follow
// across a kill -9 of kilnd during a two-rank job.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("kiln reports an unreachable kilnd in one line", "[integration][cli]") {
  const std::string dir = TempDir("cli_down");
  const CliRun r = RunCli({"--server", "127.0.0.1:1", "list"}, dir);
  CHECK(r.code == 4);
  CHECK(r.err == "kiln: cannot reach kilnd at 127.0.0.1:1\n");
}

TEST_CASE("kiln verbs against a real kilnd", "[integration][cli]") {
  const std::string dir = TempDir("cli");
  KilndOptions options;
  options.state_dir = dir + "/state";
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  const std::string server = kilnd.address();

  auto tokens = PrepareTokens(dir);
  REQUIRE(tokens.ok());

  // A bad spec: one line naming the file, line, column and field path; nothing submitted.
  const std::string bad = WriteFile(dir, "bad.yaml", MlpJob(10) + "trian: {}\n");
  CliRun r = RunCli({"--server", server, "submit", "-f", bad}, dir);
  CHECK(r.code == 2);
  CHECK(r.err == "kiln: " + bad + ":5:1: trian: unknown field; did you mean \"train\"?\n");

  // submit --json prints the job with its id.
  const std::string good = WriteFile(dir, "good.yaml", MlpJob(10));
  r = RunCli({"--server", server, "submit", "-f", good, "--json", "--name", "from-cli"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"id\": \"job-1\""));
  CHECK(Contains(r.out, "\"name\": \"from-cli\""));
  REQUIRE(WaitForState(kilnd.Client().get(), "job-1", v1::SUCCEEDED, absl::Seconds(90)).ok());

  // status --json prints the job with its state.
  r = RunCli({"--json", "status", "job-1", "--server", server}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"state\": \"SUCCEEDED\""));

  // --follow exits with the outcome: 0 for success, 1 for failure (here: data the model's
  // vocabulary cannot hold, so the worker exits 2 and the job fails without a retry).
  r = RunCli({"--server", server, "submit", "-f", good, "--follow"}, dir);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "job-2 SUCCEEDED"));
  CHECK(Contains(r.out, "logs:"));
  const std::string failing = WriteFile(dir, "fail.yaml", BadInputJob(*tokens));
  r = RunCli({"--server", server, "submit", "-f", failing, "--follow"}, dir);
  CHECK(r.code == 1);
  CHECK(Contains(r.out, "job-3 FAILED"));
  CHECK(Contains(r.out, "is not below model.vocab_size 64"));

  // Tables for people, JSON for scripts.
  r = RunCli({"--server", server, "list"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "ID"));
  CHECK(Contains(r.out, "job-3"));
  r = RunCli({"--server", server, "list", "--json", "--state", "failed"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "job-3"));
  CHECK_FALSE(Contains(r.out, "job-1"));
  r = RunCli({"--server", server, "metrics", "job-1", "--csv"}, dir);
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("step,attempt,loss", 0) == 0);
  CHECK(Contains(r.out, "\n10,1,"));
  r = RunCli({"--server", server, "logs", "job-1"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "step 10/10"));
  CHECK(Contains(r.out, "kiln-worker: training finished"));
  r = RunCli({"--server", server, "nodes"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "SLOTS"));
  r = RunCli({"--server", server, "nodes", "--json"}, dir);
  CHECK(Contains(r.out, "\"slots\": 2"));

  // cancel waits for the gang to be gone.
  const std::string slow = WriteFile(dir, "slow.yaml", MlpJob(1000000));
  r = RunCli({"--server", server, "submit", "-f", slow}, dir);
  REQUIRE(r.code == 0);
  REQUIRE(WaitForState(kilnd.Client().get(), "job-4", v1::RUNNING, absl::Seconds(60)).ok());
  r = RunCli({"--server", server, "cancel", "job-4"}, dir);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "job-4 CANCELLED"));

  // Unknown things are one-line errors.
  r = RunCli({"--server", server, "status", "job-99"}, dir);
  CHECK(r.code == 1);
  CHECK(r.err == "kiln: no job job-99\n");
  r = RunCli({"--server", server, "frobnicate"}, dir);
  CHECK(r.code == 2);
}

TEST_CASE("kiln submit --follow survives a kilnd restart", "[integration][cli]") {
  const std::string dir = TempDir("cli_follow_restart");
  KilndOptions options;
  options.state_dir = dir + "/state";
  options.grace_s = 15;
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  const std::string spec =
      WriteFile(dir, "job.yaml", MlpJob(1500, 2, "checkpoint: {every_steps: 500}\n"));
  const pid_t follower =
      StartCli({"--server", kilnd.address(), "submit", "-f", spec, "--follow"}, dir);
  REQUIRE(WaitFor(
              kilnd.Client().get(), "job-1",
              [](const v1::Job& j) { return j.progress().step() >= 100; }, absl::Seconds(60))
              .ok());
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  absl::SleepFor(absl::Seconds(1));
  REQUIRE(kilnd.Start().ok());
  const CliRun r = FinishCli(follower, dir);
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "lost kilnd; reconnecting..."));
  CHECK(Contains(r.out, "reconnected to kilnd"));
  CHECK(Contains(r.out, "job-1 SUCCEEDED"));
  // Events that happened while the follower was away are shown after it reconnects.
  CHECK(Contains(r.out, "checkpoint at step 1500 complete"));
}

}  // namespace
}  // namespace kiln::testing
