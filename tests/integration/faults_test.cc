// Lifecycle and fault handling with real kilnd and worker processes (kiln-worker linked with the
// scripted test trainer, so no model is trained): success, cancel without orphans, a worker killed
// with SIGKILL and the gang restarted from its checkpoint, a SIGSTOPped worker and a stalled one
// detected as hangs within their timeouts, bad input not retried, retries with back-off.
#include <signal.h>

#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using v1::Job;

std::vector<pid_t> Pids(const Job& job) {
  std::vector<pid_t> pids;
  for (const v1::RankStatus& r : job.ranks()) pids.push_back(r.pid());
  return pids;
}

bool HasEvent(const Job& job, const std::string& text) {
  for (const v1::JobEvent& e : job.events()) {
    if (Contains(e.message(), text)) return true;
  }
  return false;
}

const v1::JobEvent* FindEvent(const Job& job, const std::string& text) {
  for (const v1::JobEvent& e : job.events()) {
    if (Contains(e.message(), text)) return &e;
  }
  return nullptr;
}

std::string Logs(client::KilnClient* client, const std::string& job_id) {
  v1::StreamLogsRequest request;
  request.set_job_id(job_id);
  std::string out;
  (void)client->StreamLogs(request, [&](const v1::LogChunk& c) {
    out += c.data();
    return true;
  });
  return out;
}

KilndOptions Options(const std::string& name) {
  KilndOptions o;
  o.state_dir = TempDir(name);
  o.worker_binary = ScriptedWorkerBinary();
  o.slots = 2;
  o.grace_s = 3;
  return o;
}

TEST_CASE("a two-rank job runs to success with metrics, checkpoints, logs and events",
          "[integration]") {
  KilndProcess kilnd(Options("succeed"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(20, 2, {}, "checkpoint: {every_steps: 10}\n"));
  REQUIRE(job.ok());
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(30));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->attempt() == 1);
  CHECK(done->restarts() == 0);
  CHECK(done->progress().step() == 20);
  CHECK(done->last_checkpoint().step() == 20);
  REQUIRE(done->ranks_size() == 2);
  for (const v1::RankStatus& r : done->ranks()) {
    CHECK(r.state() == v1::RANK_EXITED);
    CHECK(r.exit_code() == 0);
  }
  CHECK(HasEvent(*done, "QUEUED: submitted"));
  CHECK(HasEvent(*done, "RUNNING: all 2 ranks registered"));
  CHECK(HasEvent(*done, "checkpoint at step 10 complete on all 2 ranks"));
  CHECK(HasEvent(*done, "SUCCEEDED"));
  auto metrics = client->Metrics(job->id());
  REQUIRE(metrics.ok());
  REQUIRE(metrics->points_size() == 20);
  CHECK(metrics->points(19).step() == 20);
  const std::string logs = Logs(client.get(), job->id());
  CHECK(Contains(logs, "rendezvous: all 2 ranks present"));
  CHECK(Contains(logs, "rank 0 done at step 20"));
  CHECK(Contains(logs, "rank 1 done at step 20"));
  CHECK(WaitAllGone(Pids(*done), absl::Seconds(1)));
}

TEST_CASE("cancel stops the gang gracefully and leaves no process", "[integration]") {
  KilndProcess kilnd(Options("cancel"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // One rank: scripted ranks are not in lockstep, so two could checkpoint different steps.
  auto job = Submit(client.get(), ScriptedSpec(100000, 1, {}, "checkpoint: {every_steps: 1000}\n"));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 5; },
      absl::Seconds(20));
  REQUIRE(running.ok());
  const std::vector<pid_t> pids = Pids(*running);
  REQUIRE(client->Cancel(job->id(), 0, "test").ok());
  auto cancelled = WaitForState(client.get(), job->id(), v1::CANCELLED, absl::Seconds(10));
  INFO(kilnd.Log());
  REQUIRE(cancelled.ok());
  CHECK(Contains(cancelled->reason(), "cancelled: test"));
  CHECK(cancelled->cancel_requested());
  // The trainer honoured the stop: it wrote a checkpoint on the way out; no SIGKILL was needed.
  CHECK(cancelled->last_checkpoint().step() >= 5);
  CHECK_FALSE(HasEvent(*cancelled, "grace period over"));
  CHECK(WaitAllGone(pids, absl::Seconds(1)));
}

TEST_CASE("a worker that ignores the stop is killed after the grace period", "[integration]") {
  KilndProcess kilnd(Options("cancel_forced"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(100000, 1, {{"test.ignore_stop", "1"}}));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 3; },
      absl::Seconds(20));
  REQUIRE(running.ok());
  const absl::Time start = absl::Now();
  REQUIRE(client->Cancel(job->id(), 1.0, "").ok());
  auto cancelled = WaitForState(client.get(), job->id(), v1::CANCELLED, absl::Seconds(10));
  REQUIRE(cancelled.ok());
  const absl::Duration took = absl::Now() - start;
  CHECK(took >= absl::Seconds(1));
  CHECK(took < absl::Seconds(4));
  CHECK(HasEvent(*cancelled, "grace period over: SIGKILL to 1 rank"));
  CHECK(cancelled->ranks(0).signal() == SIGKILL);
  CHECK(WaitAllGone(Pids(*running), absl::Seconds(1)));
}

TEST_CASE("kill -9 of a worker restarts the whole gang from the last checkpoint", "[integration]") {
  KilndProcess kilnd(Options("gang_restart"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job =
      Submit(client.get(), ScriptedSpec(60, 2, {{"test.step_ms", "40"}},
                                        "checkpoint: {every_steps: 10}\n"
                                        "fault: {max_restarts: 2, restart_backoff_s: 0.2}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(),
      [](const Job& j) { return j.last_checkpoint().step() >= 10 && j.progress().step() >= 12; },
      absl::Seconds(30));
  REQUIRE(mid.ok());
  const std::vector<pid_t> first_pids = Pids(*mid);
  REQUIRE(kill(first_pids[1], SIGKILL) == 0);
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(60));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->restarts() == 1);
  CHECK(done->attempt() == 2);
  CHECK(HasEvent(*done, "rank 1 was killed by signal 9 (SIGKILL)"));
  CHECK(HasEvent(*done, "RESTARTING: attempt 1 failed"));
  const v1::JobEvent* relaunch = FindEvent(*done, "attempt 2: launching 2 workers");
  REQUIRE(relaunch != nullptr);
  CHECK(Contains(relaunch->message(), "from checkpoint step"));
  CHECK(Contains(Logs(client.get(), job->id()), "rank 1 resumed at step"));
  CHECK(done->progress().step() == 60);
  CHECK(WaitAllGone(first_pids, absl::Seconds(1)));
  CHECK(WaitAllGone(Pids(*done), absl::Seconds(1)));
}

TEST_CASE("a SIGSTOPped worker is detected within its heartbeat timeout", "[integration]") {
  KilndProcess kilnd(Options("sigstop"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job =
      Submit(client.get(),
             ScriptedSpec(100000, 1, {}, "fault: {heartbeat_timeout_s: 2, max_restarts: 0}\n"));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 3; },
      absl::Seconds(20));
  REQUIRE(running.ok());
  const pid_t pid = running->ranks(0).pid();
  const absl::Time stopped = absl::Now();
  REQUIRE(kill(pid, SIGSTOP) == 0);
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(15));
  INFO(kilnd.Log());
  REQUIRE(failed.ok());
  CHECK(Contains(failed->reason(), "rank 0 missed heartbeats"));
  CHECK(Contains(failed->reason(), "no restarts left"));
  const v1::JobEvent* detected = FindEvent(*failed, "missed heartbeats");
  REQUIRE(detected != nullptr);
  // Detected within the 2 s timeout, plus the monitor's tick and slack for a loaded machine.
  const absl::Duration latency = absl::FromUnixSeconds(detected->time().seconds()) +
                                 absl::Nanoseconds(detected->time().nanos()) - stopped;
  CHECK(latency <= absl::Milliseconds(3000));
  CHECK(WaitAllGone({pid}, absl::Seconds(2)));
}

TEST_CASE("heartbeats without step progress are a hang", "[integration]") {
  KilndProcess kilnd(Options("stall"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(100, 1, {{"test.stall_at_step", "3"}},
                                               "fault: {hang_timeout_s: 1.5, max_restarts: 0}\n"));
  REQUIRE(job.ok());
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(20));
  INFO(kilnd.Log());
  REQUIRE(failed.ok());
  CHECK(Contains(failed->reason(), "rank 0 hung: heartbeats but no step progress"));
  CHECK(Contains(failed->reason(), "at step 3"));
  CHECK(failed->progress().step() == 3);
  CHECK(WaitAllGone(Pids(*failed), absl::Seconds(1)));
}

TEST_CASE("exit code 2 (bad input) is not retried", "[integration]") {
  KilndProcess kilnd(Options("bad_input"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(10, 1, {{"test.fail", "invalid_argument"}},
                                               "fault: {max_restarts: 3}\n"));
  REQUIRE(job.ok());
  auto failed = WaitForState(client.get(), job->id(), v1::FAILED, absl::Seconds(20));
  REQUIRE(failed.ok());
  CHECK(failed->attempt() == 1);
  CHECK(failed->restarts() == 0);
  CHECK(Contains(failed->reason(), "exited with code 2: INVALID_ARGUMENT: scripted bad input"));
  CHECK(Contains(failed->reason(), "bad input: not retried"));
}

TEST_CASE("a failed attempt is retried after its back-off and resumes", "[integration]") {
  KilndProcess kilnd(Options("retry"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job =
      Submit(client.get(), ScriptedSpec(12, 1, {{"test.fail_at_step", "7"}},
                                        "checkpoint: {every_steps: 3}\n"
                                        "fault: {max_restarts: 1, restart_backoff_s: 0.5}\n"));
  REQUIRE(job.ok());
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(30));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(done->restarts() == 1);
  const v1::JobEvent* stopped = FindEvent(*done,
                                          "gang stopped; restart 1 of 1 in 0.5 s from "
                                          "checkpoint step 6");
  const v1::JobEvent* relaunched = FindEvent(*done, "attempt 2: launching");
  REQUIRE(stopped != nullptr);
  REQUIRE(relaunched != nullptr);
  const int64_t gap_ms = (relaunched->time().seconds() - stopped->time().seconds()) * 1000 +
                         (relaunched->time().nanos() - stopped->time().nanos()) / 1000000;
  CHECK(gap_ms >= 450);
  CHECK(Contains(Logs(client.get(), job->id()), "rank 0 resumed at step 6"));
}

}  // namespace
}  // namespace kiln::testing
