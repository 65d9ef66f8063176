// kiln-worker and the example configs exactly as shipped: configs/mlp-tiny.yaml, submitted with
// `kiln submit --follow`, trains to success through kilnd (with its evaluations) and leaves no
// process; kiln-worker started by hand, outside kilnd, ends with the documented exit codes
// (2 without its per-job token, 1 when kilnd cannot be reached).
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

// Runs kiln-worker with `args` and, if not empty, KILN_WORKER_TOKEN=`token`; returns its exit
// code and leaves its output in dir/worker.log.
int RunWorker(const std::vector<std::string>& args, const std::string& token,
              const std::string& dir) {
  std::vector<std::string> argv = {WorkerBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (freopen((dir + "/worker.log").c_str(), "w", stderr) == nullptr) _exit(126);
    if (token.empty()) {
      unsetenv("KILN_WORKER_TOKEN");
    } else {
      setenv("KILN_WORKER_TOKEN", token.c_str(), 1);
    }
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_CASE("configs/mlp-tiny.yaml as shipped trains through kilnd", "[integration]") {
  const std::string dir = TempDir("shipped");
  KilndOptions options;
  options.state_dir = dir + "/state";
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  const CliRun r = RunCli(
      {"--server", kilnd.address(), "submit", "-f", Runfile("configs/mlp-tiny.yaml"), "--follow"},
      dir);
  INFO(r.out << r.err << kilnd.Log());
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "job-1 SUCCEEDED"));
  auto client = kilnd.Client();
  auto job = client->GetJob("job-1");
  REQUIRE(job.ok());
  CHECK(job->progress().step() == 50);
  const std::vector<v1::MetricPoint> points = AllMetrics(client.get(), "job-1");
  REQUIRE(points.size() == 50);  // one point per step, evaluations included
  for (int i = 0; i < 50; ++i) CHECK(points[i].step() == i + 1);
  CHECK(points.back().loss() < points.front().loss());
  // train.eval_every: 25 on the synthetic task's held-out rows.
  CHECK(points[24].has_val_loss());
  CHECK(points[49].has_val_loss());
  CHECK_FALSE(points[10].has_val_loss());
  CHECK(WaitAllGone(Pids(*job), absl::Seconds(1)));
}

TEST_CASE("kiln-worker outside kilnd exits 2 without a token and 1 without a coordinator",
          "[integration]") {
  const std::string dir = TempDir("worker_exit_codes");
  const std::vector<std::string> args = {"--server", "127.0.0.1:1", "--job", "job-1",     "--rank",
                                         "0",        "--attempt",   "1",     "--grace-s", "1"};
  CHECK(RunWorker(args, "", dir) == 2);
  CHECK(Contains(ReadFile(dir + "/worker.log"), "KILN_WORKER_TOKEN is not set"));
  CHECK(RunWorker({"--rank", "x"}, "t0ken", dir) == 2);
  CHECK(Contains(ReadFile(dir + "/worker.log"), "bad flag --rank x"));
  CHECK(RunWorker(args, "t0ken", dir) == 1);
  CHECK(Contains(ReadFile(dir + "/worker.log"), "cannot register with kilnd at 127.0.0.1:1"));
}

}  // namespace
}  // namespace kiln::testing
