// The `kiln` CLI as users run it, against a real kilnd: --json on every verb, one-line errors with
// field paths, "cannot reach kilnd", --follow's exit code equal to the job's outcome, and the
// table views.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

struct Run {
  int code = -1;
  std::string out;
  std::string err;
};

// Starts `kiln args...` with KILN_SERVER unset, output to dir/kiln.{out,err}.
pid_t StartKiln(const std::vector<std::string>& args, const std::string& dir) {
  const std::string out_path = dir + "/kiln.out", err_path = dir + "/kiln.err";
  std::vector<std::string> argv = {Runfile("client/cli/kiln")};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    freopen(out_path.c_str(), "w", stdout);
    freopen(err_path.c_str(), "w", stderr);
    unsetenv("KILN_SERVER");
    unsetenv("KILN_TOKEN");
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  return pid;
}

Run Finish(pid_t pid, const std::string& dir) {
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(dir + "/kiln.out"),
          ReadFile(dir + "/kiln.err")};
}

Run Kiln(const std::vector<std::string>& args, const std::string& dir) {
  return Finish(StartKiln(args, dir), dir);
}

std::string WriteSpec(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST_CASE("kiln reports an unreachable kilnd in one line", "[integration][cli]") {
  const std::string dir = TempDir("cli_down");
  const Run r = Kiln({"--server", "127.0.0.1:1", "list"}, dir);
  CHECK(r.code == 4);
  CHECK(r.err == "kiln: cannot reach kilnd at 127.0.0.1:1\n");
}

TEST_CASE("kiln verbs against a real kilnd", "[integration][cli]") {
  const std::string dir = TempDir("cli");
  KilndOptions options;
  options.state_dir = dir + "/state";
  options.worker_binary = ScriptedWorkerBinary();
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  const std::string server = kilnd.address();

  // A bad spec: one line naming the file, line, column and field path; nothing submitted.
  const std::string bad = WriteSpec(dir, "bad.yaml", ScriptedSpec(10, 1, {}) + "trian: {}\n");
  Run r = Kiln({"--server", server, "submit", "-f", bad}, dir);
  CHECK(r.code == 2);
  CHECK(r.err == "kiln: " + bad + ":5:1: trian: unknown field; did you mean \"train\"?\n");

  // submit --json prints the job with its id.
  const std::string good = WriteSpec(dir, "good.yaml", ScriptedSpec(10, 1, {}));
  r = Kiln({"--server", server, "submit", "-f", good, "--json", "--name", "from-cli"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"id\": \"job-1\""));
  CHECK(Contains(r.out, "\"name\": \"from-cli\""));
  REQUIRE(WaitForState(kilnd.Client().get(), "job-1", v1::SUCCEEDED, absl::Seconds(30)).ok());

  // status --json prints the job with its state.
  r = Kiln({"--json", "status", "job-1", "--server", server}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"state\": \"SUCCEEDED\""));

  // --follow exits with the outcome: 0 for success, 1 for failure.
  r = Kiln({"--server", server, "submit", "-f", good, "--follow"}, dir);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "job-2 SUCCEEDED"));
  CHECK(Contains(r.out, "logs:"));
  const std::string failing =
      WriteSpec(dir, "fail.yaml", ScriptedSpec(10, 1, {{"test.fail", "invalid_argument"}}));
  r = Kiln({"--server", server, "submit", "-f", failing, "--follow"}, dir);
  CHECK(r.code == 1);
  CHECK(Contains(r.out, "job-3 FAILED"));

  // Tables for people, JSON for scripts.
  r = Kiln({"--server", server, "list"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "ID"));
  CHECK(Contains(r.out, "job-3"));
  r = Kiln({"--server", server, "list", "--json", "--state", "failed"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "job-3"));
  CHECK_FALSE(Contains(r.out, "job-1"));
  r = Kiln({"--server", server, "metrics", "job-1", "--csv"}, dir);
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("step,attempt,loss", 0) == 0);
  CHECK(Contains(r.out, "\n10,1,"));
  r = Kiln({"--server", server, "logs", "job-1"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "rank 0 done at step 10"));
  r = Kiln({"--server", server, "nodes"}, dir);
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "SLOTS"));
  r = Kiln({"--server", server, "nodes", "--json"}, dir);
  CHECK(Contains(r.out, "\"slots\": 2"));

  // cancel waits for the gang to be gone.
  const std::string slow = WriteSpec(dir, "slow.yaml", ScriptedSpec(100000, 1, {}));
  r = Kiln({"--server", server, "submit", "-f", slow}, dir);
  REQUIRE(r.code == 0);
  REQUIRE(WaitForState(kilnd.Client().get(), "job-4", v1::RUNNING, absl::Seconds(20)).ok());
  r = Kiln({"--server", server, "cancel", "job-4"}, dir);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "job-4 CANCELLED"));

  // Unknown things are one-line errors.
  r = Kiln({"--server", server, "status", "job-99"}, dir);
  CHECK(r.code == 1);
  CHECK(r.err == "kiln: no job job-99\n");
  r = Kiln({"--server", server, "frobnicate"}, dir);
  CHECK(r.code == 2);
}

TEST_CASE("kiln submit --follow survives a kilnd restart", "[integration][cli]") {
  const std::string dir = TempDir("cli_follow_restart");
  KilndOptions options;
  options.state_dir = dir + "/state";
  options.worker_binary = ScriptedWorkerBinary();
  options.grace_s = 15;
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  const std::string spec =
      WriteSpec(dir, "job.yaml",
                ScriptedSpec(80, 2, {{"test.step_ms", "50"}}, "checkpoint: {every_steps: 20}\n"));
  const pid_t follower =
      StartKiln({"--server", kilnd.address(), "submit", "-f", spec, "--follow"}, dir);
  REQUIRE(WaitFor(
              kilnd.Client().get(), "job-1",
              [](const v1::Job& j) { return j.progress().step() >= 10; }, absl::Seconds(30))
              .ok());
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  absl::SleepFor(absl::Seconds(1));
  REQUIRE(kilnd.Start().ok());
  const Run r = Finish(follower, dir);
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK(Contains(r.out, "lost kilnd; reconnecting..."));
  CHECK(Contains(r.out, "reconnected to kilnd"));
  CHECK(Contains(r.out, "job-1 SUCCEEDED"));
  // Events that happened while the follower was away are shown after it reconnects.
  CHECK(Contains(r.out, "checkpoint at step 80 complete"));
}

}  // namespace
}  // namespace kiln::testing
