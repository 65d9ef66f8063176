// Lifecycle and fault handling with a real kilnd and real kiln-worker processes training real
// models (Note [Real jobs in tests] in harness.h): success, cancel of a two-rank gang without
// orphans, a worker that cannot stop within the grace, a rank killed with SIGKILL and the gang
// restarted from its checkpoint, a SIGSTOPped worker (missed heartbeats), a SIGSTOPped rank whose
// peer heartbeats without progress (a hang), bad data not retried, a SIGSEGV retried after its
// back-off.
#include <signal.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/core/device_runtime.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using v1::Job;

KilndOptions Options(const std::string& name) {
  KilndOptions o;
  o.state_dir = TempDir(name);
  o.slots = 2;
  o.grace_s = 3;
  return o;
}

TEST_CASE("a two-rank job trains to success with metrics, checkpoints, logs and events",
          "[integration]") {
  KilndProcess kilnd(Options("succeed"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), MlpJob(40, 2, "checkpoint: {every_steps: 10}\n"));
  REQUIRE(job.ok());
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(120));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->attempt() == 1);
  CHECK(done->restarts() == 0);
  CHECK(done->progress().step() == 40);
  CHECK(done->last_checkpoint().step() == 40);
  REQUIRE(done->ranks_size() == 2);
  for (const v1::RankStatus& r : done->ranks()) {
    CHECK(r.state() == v1::RANK_EXITED);
    CHECK(r.exit_code() == 0);
  }
  CHECK(HasEvent(*done, "QUEUED: submitted"));
  CHECK(HasEvent(*done, "RUNNING: all 2 ranks registered"));
  CHECK(HasEvent(*done, "checkpoint at step 10 complete on all 2 ranks"));
  CHECK(HasEvent(*done, "SUCCEEDED"));
  // A sharded checkpoint: the full weights, the state, and one optimizer shard per rank.
  const std::filesystem::path ckpt = done->last_checkpoint().path();
  CHECK(std::filesystem::exists(ckpt / "model.safetensors"));
  CHECK(std::filesystem::exists(ckpt / "state.json"));
  CHECK(std::filesystem::exists(ckpt / "optimizer-00000-of-00002.safetensors"));
  CHECK(std::filesystem::exists(ckpt / "optimizer-00001-of-00002.safetensors"));
  // Real metrics: every step once, and a model that learned.
  const std::vector<v1::MetricPoint> points = AllMetrics(client.get(), job->id());
  REQUIRE(points.size() == 40);
  double first = 0, last = 0;
  for (int i = 0; i < 40; ++i) {
    CHECK(points[i].step() == i + 1);
    CHECK(std::isfinite(points[i].loss()));
    if (i < 5) first += points[i].loss() / 5;
    if (i >= 35) last += points[i].loss() / 5;
  }
  CHECK(last < first);
  const std::string logs = Logs(client.get(), job->id());
  CHECK(Contains(logs, "rendezvous: all 2 ranks present"));
  CHECK(Contains(logs, "step 40/40"));
  CHECK(Contains(logs, "training finished"));
  CHECK(WaitAllGone(Pids(*done), absl::Seconds(1)));
}

TEST_CASE("cancel stops a two-rank gang gracefully, at one step, and leaves no process",
          "[integration]") {
  KilndProcess kilnd(Options("cancel"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // Several rounds: the ranks see the SIGTERM independently and must still stop at the same step
  // to write their checkpoint together (Note [Agreeing on a stop] in worker/stop_agreement.h).
  for (int round = 0; round < 3; ++round) {
    INFO("round " << round);
    auto job = Submit(client.get(), MlpJob(1000000, 2));
    REQUIRE(job.ok());
    auto running = WaitFor(
        client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 20; },
        absl::Seconds(60));
    REQUIRE(running.ok());
    const std::vector<pid_t> pids = Pids(*running);
    REQUIRE(client->Cancel(job->id(), 0, "test").ok());
    auto cancelled = WaitForState(client.get(), job->id(), v1::CANCELLED, absl::Seconds(20));
    INFO(kilnd.Log());
    REQUIRE(cancelled.ok());
    CHECK(Contains(cancelled->reason(), "cancelled: test"));
    CHECK(cancelled->cancel_requested());
    // Both ranks honoured the stop at the same step and wrote one checkpoint; no SIGKILL.
    const int64_t step = cancelled->last_checkpoint().step();
    CHECK(step >= 20);
    CHECK(HasEvent(*cancelled,
                   absl::StrCat("checkpoint at step ", step, " complete on all 2 ranks")));
    REQUIRE(cancelled->ranks_size() == 2);
    for (const v1::RankStatus& r : cancelled->ranks()) {
      CHECK(r.signal() == 0);
      CHECK(Contains(r.message(), absl::StrCat("CANCELLED: stopped at step ", step)));
    }
    CHECK_FALSE(HasEvent(*cancelled, "grace period over"));
    CHECK(WaitAllGone(pids, absl::Seconds(1)));
  }
}

TEST_CASE("a worker that cannot stop within the grace period is killed", "[integration]") {
  KilndProcess kilnd(Options("cancel_forced"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // Its first step takes seconds (LongStepJob), and the trainer only stops between steps.
  auto job = Submit(client.get(), LongStepJob());
  REQUIRE(job.ok());
  auto running = WaitForTraining(client.get(), job->id(), absl::Seconds(60));
  REQUIRE(running.ok());
  const absl::Time start = absl::Now();
  REQUIRE(client->Cancel(job->id(), 1.0, "").ok());
  auto cancelled = WaitForState(client.get(), job->id(), v1::CANCELLED, absl::Seconds(20));
  INFO(kilnd.Log());
  REQUIRE(cancelled.ok());
  const absl::Duration took = absl::Now() - start;
  CHECK(took >= absl::Seconds(1));
  CHECK(took < absl::Seconds(5));
  CHECK(cancelled->progress().step() == 0);  // still inside its first step
  CHECK(HasEvent(*cancelled, "grace period over: SIGKILL to 1 rank"));
  CHECK(cancelled->ranks(0).signal() == SIGKILL);
  CHECK_FALSE(cancelled->has_last_checkpoint());
  CHECK(WaitAllGone(Pids(*running), absl::Seconds(1)));
}

TEST_CASE("kill -9 of a worker restarts the whole gang from the last checkpoint", "[integration]") {
  KilndProcess kilnd(Options("gang_restart"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), MlpJob(1500, 2,
                                         "checkpoint: {every_steps: 100}\n"
                                         "fault: {max_restarts: 2, restart_backoff_s: 0.2}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(),
      [](const Job& j) { return j.last_checkpoint().step() >= 100 && j.progress().step() >= 120; },
      absl::Seconds(120));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
  const std::vector<pid_t> first_pids = Pids(*mid);
  REQUIRE(kill(first_pids[1], SIGKILL) == 0);
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(180));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->restarts() == 1);
  CHECK(done->attempt() == 2);
  CHECK(HasEvent(*done, "rank 1 was killed by signal 9 (SIGKILL)"));
  CHECK(HasEvent(*done, "RESTARTING: attempt 1 failed"));
  const v1::JobEvent* relaunch = FindEvent(*done, "attempt 2: launching 2 workers");
  REQUIRE(relaunch != nullptr);
  const int64_t from = NumberAfter(relaunch->message(), "from checkpoint step ");
  CHECK(from >= 100);
  // Both ranks of attempt 2 resumed there, and rank 0 reported every step after it.
  const std::string logs = Logs(client.get(), job->id());
  CHECK(Contains(logs, absl::StrCat("training from step ", from, " of 1500")));
  int64_t resumed_at = -1;
  for (const v1::MetricPoint& p : AllMetrics(client.get(), job->id())) {
    if (p.attempt() == 2 && resumed_at < 0) resumed_at = p.step();
  }
  CHECK(resumed_at == from + 1);
  CHECK(done->progress().step() == 1500);
  CHECK(WaitAllGone(first_pids, absl::Seconds(1)));
  CHECK(WaitAllGone(Pids(*done), absl::Seconds(1)));
}

TEST_CASE("a SIGSTOPped worker is detected within its heartbeat timeout", "[integration]") {
  KilndProcess kilnd(Options("sigstop"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(),
                    MlpJob(1000000, 1, "fault: {heartbeat_timeout_s: 2, max_restarts: 0}\n"));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 3; },
      absl::Seconds(60));
  REQUIRE(running.ok());
  const pid_t pid = running->ranks(0).pid();
  const absl::Time stopped = absl::Now();
  REQUIRE(kill(pid, SIGSTOP) == 0);
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(20));
  INFO(kilnd.Log());
  REQUIRE(failed.ok());
  CHECK(Contains(failed->reason(), "rank 0 missed heartbeats"));
  CHECK(Contains(failed->reason(), "no restarts left"));
  const v1::JobEvent* detected = FindEvent(*failed, "missed heartbeats");
  REQUIRE(detected != nullptr);
  // Detected within the 2 s timeout, plus the monitor's tick and slack for a loaded machine.
  CHECK(EventTime(*detected) - stopped <= absl::Milliseconds(3000));
  CHECK(WaitAllGone({pid}, absl::Seconds(2)));
}

TEST_CASE("a SIGSTOPped rank of a two-rank job is a hang: its peer heartbeats without progress",
          "[integration]") {
  KilndProcess kilnd(Options("hang"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // Heartbeats are not what times out here (60 s); step progress is (4 s).
  auto job = Submit(client.get(), MlpJob(1000000, 2,
                                         "fault: {heartbeat_timeout_s: 60, hang_timeout_s: 4, "
                                         "max_restarts: 0}\n"));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 20; },
      absl::Seconds(60));
  REQUIRE(running.ok());
  const std::vector<pid_t> pids = Pids(*running);
  const absl::Time stopped = absl::Now();
  REQUIRE(kill(pids[1], SIGSTOP) == 0);
  // Rank 1 is silent; rank 0 is blocked in a collective waiting for it, yet its heartbeat thread
  // keeps reporting. Before the hang timeout the job still runs.
  absl::SleepFor(absl::Milliseconds(2500));
  auto stuck = client->GetJob(job->id());
  REQUIRE(stuck.ok());
  CHECK(stuck->state() == v1::RUNNING);
  const auto heartbeat = [](const v1::RankStatus& r) {
    return absl::FromUnixSeconds(r.last_heartbeat().seconds()) +
           absl::Nanoseconds(r.last_heartbeat().nanos());
  };
  CHECK(heartbeat(stuck->ranks(0)) > stopped + absl::Seconds(1));
  CHECK(heartbeat(stuck->ranks(1)) < stopped + absl::Milliseconds(100));
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(30));
  INFO(kilnd.Log());
  REQUIRE(failed.ok());
  // kilnd names the silent rank, not the one waiting on it (Note [Naming the hung rank]).
  CHECK(Contains(failed->reason(), "rank 1 hung: no heartbeats and no step progress for "));
  CHECK(Contains(failed->reason(), "fault.hang_timeout_s = 4 s"));
  CHECK(Contains(failed->reason(), "the other ranks wait on it"));
  CHECK(Contains(failed->reason(), "no restarts left"));
  CHECK_FALSE(HasEvent(*failed, "missed heartbeats"));
  const v1::JobEvent* detected = FindEvent(*failed, "hung:");
  REQUIRE(detected != nullptr);
  // At least the hang timeout after the rank's last progress (up to one heartbeat interval
  // before the stop), at most the timeout plus an interval, the tick and slack for load.
  CHECK(EventTime(*detected) - stopped >= absl::Seconds(3));
  CHECK(EventTime(*detected) - stopped <= absl::Milliseconds(6500));
  CHECK(WaitAllGone(pids, absl::Seconds(5)));
}

TEST_CASE("exit code 2 (bad input: tokens beyond the vocabulary) is not retried", "[integration]") {
  const std::string dir = TempDir("bad_input");
  auto tokens = PrepareTokens(dir);
  REQUIRE(tokens.ok());
  KilndProcess kilnd(Options("bad_input_state"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), BadInputJob(*tokens));  // fault.max_restarts: 3
  REQUIRE(job.ok());
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(60));
  INFO(kilnd.Log());
  REQUIRE(failed.ok());
  CHECK(failed->attempt() == 1);
  CHECK(failed->restarts() == 0);
  CHECK(failed->ranks(0).exit_code() == 2);
  CHECK(Contains(failed->reason(), "rank 0 exited with code 2: INVALID_ARGUMENT: " + *tokens));
  CHECK(Contains(failed->reason(), "is not below model.vocab_size 64"));
  CHECK(Contains(failed->reason(), "(bad input: not retried)"));
}

TEST_CASE("a device: cuda job on a node whose GPU has no usable driver fails once, exit 2",
          "[integration]") {
  if (CheckDeviceAvailable(Device::CUDA(0)).ok()) {
    KILN_SKIP("a CUDA device is present: the no-driver path cannot be exercised here");
  }
  // kilnd finds "GPUs" through CUDA_VISIBLE_DEVICES (as on a node whose driver is broken), accepts
  // the job and launches its worker, which must stop before any work with the driver's reason.
  setenv("CUDA_VISIBLE_DEVICES", "0", 1);
  KilndProcess kilnd(Options("no_driver_state"));
  const absl::Status started = kilnd.Start();
  unsetenv("CUDA_VISIBLE_DEVICES");
  REQUIRE(started.ok());
  auto client = kilnd.Client();
  std::string yaml = MlpJob(50, 1);
  const std::string cpu_resources = "resources: {workers: 1}";
  REQUIRE(yaml.find(cpu_resources) != std::string::npos);
  yaml.replace(yaml.find(cpu_resources), cpu_resources.size(),
               "resources: {workers: 1, device: cuda}");
  auto job = Submit(client.get(), yaml);
  INFO(kilnd.Log());
  REQUIRE(job.ok());
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(60));
  REQUIRE(failed.ok());
  CHECK(failed->attempt() == 1);
  CHECK(failed->restarts() == 0);
  CHECK(failed->ranks(0).exit_code() == 2);
  CHECK(Contains(failed->reason(), "no CUDA device available"));
  CHECK(Contains(failed->reason(), "(bad input: not retried)"));
}

TEST_CASE("a crashed worker (SIGSEGV) is retried after its back-off and resumes", "[integration]") {
  KilndProcess kilnd(Options("retry"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), MlpJob(1500, 1,
                                         "checkpoint: {every_steps: 100}\n"
                                         "fault: {max_restarts: 1, restart_backoff_s: 0.5}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.last_checkpoint().step() >= 100; },
      absl::Seconds(60));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
  REQUIRE(kill(mid->ranks(0).pid(), SIGSEGV) == 0);
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(120));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->restarts() == 1);
  CHECK(HasEvent(*done, "rank 0 was killed by signal 11 (SIGSEGV)"));
  const v1::JobEvent* stopped = FindEvent(*done, "gang stopped; restart 1 of 1 in 0.5 s from ");
  const v1::JobEvent* relaunched = FindEvent(*done, "attempt 2: launching 1 worker");
  REQUIRE(stopped != nullptr);
  REQUIRE(relaunched != nullptr);
  const int64_t from = NumberAfter(stopped->message(), "from checkpoint step ");
  CHECK(from >= 100);
  CHECK(Contains(relaunched->message(), absl::StrCat("from checkpoint step ", from)));
  CHECK(EventTime(*relaunched) - EventTime(*stopped) >= absl::Milliseconds(450));
  CHECK(Contains(Logs(client.get(), job->id()), absl::StrCat("training from step ", from)));
  CHECK(done->progress().step() == 1500);
}

}  // namespace
}  // namespace kiln::testing
