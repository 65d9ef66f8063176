// kilnd restarts with real processes: kill -9 mid-run and a restart (the workers keep training and
// are adopted; the job finishes with its history intact), kill -9 with no restart (no worker
// outlives the grace period), queued jobs and idempotency across a restart, and SIGTERM draining
// (running gangs checkpoint and are requeued, then resume).
#include <signal.h>

#include <set>

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

KilndOptions Options(const std::string& name, double grace_s) {
  KilndOptions o;
  o.state_dir = TempDir(name);
  o.worker_binary = ScriptedWorkerBinary();
  o.slots = 2;
  o.grace_s = grace_s;
  return o;
}

TEST_CASE("kill -9 kilnd mid-run: the job finishes after a restart, history intact",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("kill_kilnd", 15));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(80, 2, {{"test.step_ms", "50"}},
                                               "checkpoint: {every_steps: 20}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 10; },
      absl::Seconds(30));
  REQUIRE(mid.ok());
  const std::vector<pid_t> pids = Pids(*mid);
  kilnd.Signal(SIGKILL);
  CHECK(kilnd.Wait() == 128 + SIGKILL);
  absl::SleepFor(absl::Seconds(1));  // the workers train on without a coordinator
  for (pid_t pid : pids) CHECK(ProcessOrGroupAlive(pid));
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(60));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  // Adopted, not restarted: same attempt, same processes.
  CHECK(done->attempt() == 1);
  CHECK(done->restarts() == 0);
  CHECK(Pids(*done) == pids);
  CHECK(HasEvent(*done, "kilnd restarted: adopted 2 of 2 workers of attempt 1"));
  CHECK(HasEvent(*done, "rank 0 reconnected"));
  // Every event from before the crash is still there, in order.
  std::set<int64_t> seqs;
  for (const v1::JobEvent& e : done->events()) seqs.insert(e.seq());
  for (const v1::JobEvent& e : mid->events()) {
    INFO(e.message());
    CHECK(seqs.count(e.seq()) == 1);
  }
  // Metrics reported during the outage were queued and flushed: no step is missing.
  auto metrics = client->Metrics(job->id());
  REQUIRE(metrics.ok());
  std::set<int64_t> steps;
  for (const v1::MetricPoint& p : metrics->points()) steps.insert(p.step());
  CHECK(steps.size() == 80);
  CHECK(done->last_checkpoint().step() == 80);
  CHECK(WaitAllGone(pids, absl::Seconds(2)));
}

TEST_CASE("workers that died while kilnd was down: the gang restarts from its checkpoint",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("dead_while_down", 15));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(60, 2, {{"test.step_ms", "40"}},
                                               "checkpoint: {every_steps: 10}\n"
                                               "fault: {restart_backoff_s: 0.2}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.last_checkpoint().step() >= 10; },
      absl::Seconds(30));
  REQUIRE(mid.ok());
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  for (pid_t pid : Pids(*mid)) kill(pid, SIGKILL);
  REQUIRE(WaitAllGone(Pids(*mid), absl::Seconds(5)));
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(60));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(HasEvent(*done, "kilnd restarted: adopted 0 of 2 workers of attempt 1"));
  CHECK(HasEvent(*done, "rank 0 exited while kilnd was down (outcome unknown)"));
  CHECK(done->restarts() == 1);
  CHECK(done->attempt() == 2);
  CHECK(HasEvent(*done, "attempt 2: launching 2 workers on slots 0,1 from checkpoint step"));
}

TEST_CASE("kill -9 kilnd without a restart: no worker outlives the grace period",
          "[integration][recovery]") {
  const double grace_s = 2;
  KilndProcess kilnd(Options("orphans", grace_s));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(100000, 2, {{"test.ignore_stop", "1"}}));
  REQUIRE(job.ok());
  auto running = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 3; },
      absl::Seconds(20));
  REQUIRE(running.ok());
  const absl::Time killed = absl::Now();
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  // Even a trainer that ignores stop requests is gone within the grace (workers count it from
  // their last contact with kilnd), plus slack for a loaded machine.
  REQUIRE(WaitAllGone(Pids(*running), absl::Seconds(grace_s + 5)));
  CHECK(absl::Now() - killed <= absl::Seconds(grace_s + 2));
}

TEST_CASE("queued jobs, their order and idempotency survive kill -9 kilnd",
          "[integration][recovery]") {
  KilndOptions options = Options("queued_recovery", 3);
  options.slots = 0;  // queue only
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto a = Submit(client.get(), ScriptedSpec(10, 1, {}), "sub-a");
  auto b = Submit(client.get(), ScriptedSpec(10, 1, {}, "priority: 10\n"), "sub-b");
  auto c = Submit(client.get(), ScriptedSpec(10, 1, {}), "sub-c");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(c.ok());
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto jobs = client->ListJobs({});
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 3);
  for (const Job& j : *jobs) CHECK(j.state() == v1::QUEUED);
  auto b2 = WaitFor(
      client.get(), b->id(), [](const Job& j) { return j.queue_position() == 1; },
      absl::Seconds(5));
  REQUIRE(b2.ok());
  CHECK(b2->reason() == "waiting for 1 slot, 0 free (kilnd has no slots)");
  auto a2 = client->GetJob(a->id(), true);
  REQUIRE(a2.ok());
  CHECK(a2->queue_position() == 2);
  CHECK(a2->reason() ==
        "waiting for 1 slot, 0 free (kilnd has no slots); 1 job ahead at priority 10");
  CHECK(HasEvent(*a2, "QUEUED: submitted"));
  // The same submission id still names the same job.
  v1::SubmitJobRequest again;
  again.set_spec_yaml(ScriptedSpec(10, 1, {}));
  again.set_submission_id("sub-a");
  again.set_base_dir("/");
  auto resubmitted = client->Submit(again);
  REQUIRE(resubmitted.ok());
  CHECK_FALSE(resubmitted->created());
  CHECK(resubmitted->job().id() == a->id());
  // New ids continue after the recovered ones.
  auto d = Submit(client.get(), ScriptedSpec(10, 1, {}));
  REQUIRE(d.ok());
  CHECK(d->id() == "job-4");
}

TEST_CASE("SIGTERM drains: running gangs checkpoint, are requeued and resume after a restart",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("drain", 5));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // One rank: the scripted trainer's ranks are not in lockstep, so only a single rank is sure to
  // checkpoint a step that every rank has (a real data-parallel gang stops at one step).
  auto job = Submit(client.get(), ScriptedSpec(60, 1, {{"test.step_ms", "40"}},
                                               "checkpoint: {every_steps: 1000}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 10; },
      absl::Seconds(30));
  REQUIRE(mid.ok());
  kilnd.Signal(SIGTERM);
  CHECK(kilnd.Wait(absl::Seconds(15)) == 0);
  INFO(kilnd.Log());
  CHECK(Contains(kilnd.Log(), "kilnd stopped"));
  CHECK(WaitAllGone(Pids(*mid), absl::Seconds(1)));
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto requeued = client->GetJob(job->id(), true);
  REQUIRE(requeued.ok());
  CHECK(HasEvent(*requeued, "requeued by kilnd shutdown; resumes from checkpoint step"));
  CHECK(requeued->last_checkpoint().step() >= 10);  // written when the workers were asked to stop
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(60));
  REQUIRE(done.ok());
  CHECK(done->attempt() == 2);
  CHECK(done->restarts() == 0);
}

TEST_CASE("while draining, kilnd refuses new jobs", "[integration][recovery]") {
  KilndProcess kilnd(Options("drain_refuses", 3));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), ScriptedSpec(100000, 1, {{"test.ignore_stop", "1"}}));
  REQUIRE(job.ok());
  REQUIRE(WaitForState(client.get(), job->id(), v1::RUNNING, absl::Seconds(20)).ok());
  kilnd.Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(300));
  auto refused = Submit(client.get(), ScriptedSpec(10, 1, {}));
  REQUIRE_FALSE(refused.ok());
  CHECK(absl::IsUnavailable(refused.status()));
  CHECK(Contains(std::string(refused.status().message()), "kilnd is draining"));
  auto nodes = client->Nodes();
  REQUIRE(nodes.ok());
  CHECK(nodes->nodes(0).draining());
  // The stubborn worker is killed after the grace; kilnd then exits cleanly.
  CHECK(kilnd.Wait(absl::Seconds(15)) == 0);
}

}  // namespace
}  // namespace kiln::testing
