// kilnd restarts with real kiln-worker processes training real models: kill -9 mid-run of a
// two-rank GPT-2 and a restart (the workers keep training and are adopted; the job finishes with
// its history intact), workers that died while kilnd was down, kill -9 with no restart (no worker
// outlives the grace period), queued jobs and idempotency across a restart, and SIGTERM draining
// (running gangs checkpoint at one step and are requeued, then resume).
#include <signal.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using v1::Job;

KilndOptions Options(const std::string& name, double grace_s) {
  KilndOptions o;
  o.state_dir = TempDir(name);
  o.slots = 2;
  o.grace_s = grace_s;
  return o;
}

// Rank 0 of `job` reports a batch of points, one per step in `steps`.
grpc::Status ReportSteps(v1::ClusterService::Stub* stub, const std::string& token, const Job& job,
                         const std::vector<int64_t>& steps) {
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + token);
  v1::ReportMetricsRequest request;
  request.mutable_worker()->set_job_id(job.id());
  request.mutable_worker()->set_rank(0);
  request.mutable_worker()->set_attempt(job.attempt());
  for (int64_t step : steps) {
    v1::MetricPoint* p = request.add_points();
    p->set_step(step);
    p->set_loss(1.0 + static_cast<double>(step));
  }
  v1::ReportMetricsResponse response;
  return stub->ReportMetrics(&context, request, &response);
}

// Note [Metrics exactly once] (scheduler/coordinator_workers.cc): a worker resends a batch whose
// reply it lost; kilnd stores each step once, also when the resend reaches a restarted kilnd.
TEST_CASE("a resent metrics batch is stored once, before and after a kilnd restart",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("resent_metrics", 3));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto submitted = Submit(client.get(), LongStepJob(1));
  REQUIRE(submitted.ok());
  auto job = WaitForState(client.get(), submitted->id(), v1::RUNNING, absl::Seconds(60));
  REQUIRE(job.ok());
  // Stand in for rank 0: stop the real one (its steps take seconds) and report as it.
  const pid_t pid = job->ranks(0).pid();
  const std::string token = WorkerToken(pid);
  REQUIRE(token.size() == 64);
  REQUIRE(kill(pid, SIGSTOP) == 0);
  auto stopped = client->GetJob(job->id());
  REQUIRE(stopped.ok());
  const int64_t s = stopped->progress().step();  // what the real rank 0 reported before
  auto stub = kilnd.ClusterStub();
  REQUIRE(ReportSteps(stub.get(), token, *job, {s + 1, s + 2, s + 3}).ok());
  REQUIRE(ReportSteps(stub.get(), token, *job, {s + 2, s + 3, s + 4}).ok());  // a resend + one new
  kilnd.Signal(SIGKILL);
  CHECK(kilnd.Wait() == 128 + SIGKILL);
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  stub = kilnd.ClusterStub();
  REQUIRE(ReportSteps(stub.get(), token, *job, {s + 3, s + 4, s + 5}).ok());
  std::map<int64_t, int> count;
  for (const v1::MetricPoint& p : AllMetrics(client.get(), job->id())) ++count[p.step()];
  for (int64_t step = s + 1; step <= s + 5; ++step) {
    INFO("step " << step);
    CHECK(count[step] == 1);
  }
  CHECK(count.size() == static_cast<size_t>(s + 5));
  auto after = client->GetJob(job->id());
  REQUIRE(after.ok());
  CHECK(after->progress().step() == s + 5);
  kill(pid, SIGKILL);
  CHECK(WaitAllGone({pid}, absl::Seconds(10)));
}

TEST_CASE("kill -9 kilnd mid-run of a two-rank job: it finishes after a restart, history intact",
          "[integration][recovery]") {
  const std::string dir = TempDir("kill_kilnd");
  auto tokens = PrepareTokens(dir);
  REQUIRE(tokens.ok());
  KilndOptions options = Options("kill_kilnd_state", 15);
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  constexpr int kSteps = 600;
  auto job = Submit(client.get(), GptJob(*tokens, kSteps, 2, /*zero_stage=*/2,
                                         "checkpoint: {every_steps: 200}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 50; },
      absl::Seconds(120));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
  const std::vector<pid_t> pids = Pids(*mid);
  kilnd.Signal(SIGKILL);
  CHECK(kilnd.Wait() == 128 + SIGKILL);
  absl::SleepFor(absl::Seconds(1));  // the workers train on without a coordinator
  for (pid_t pid : pids) CHECK(ProcessOrGroupAlive(pid));
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(180));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  // Adopted, not restarted: same attempt, same processes.
  CHECK(done->attempt() == 1);
  CHECK(done->restarts() == 0);
  CHECK(Pids(*done) == pids);
  CHECK(HasEvent(*done, "kilnd restarted: adopted 2 of 2 workers of attempt 1"));
  CHECK(HasEvent(*done, "rank 0 reconnected"));
  CHECK(HasEvent(*done, "rank 1 reconnected"));
  // Every event from before the crash is still there.
  std::set<int64_t> seqs;
  for (const v1::JobEvent& e : done->events()) seqs.insert(e.seq());
  for (const v1::JobEvent& e : mid->events()) {
    INFO(e.message());
    CHECK(seqs.count(e.seq()) == 1);
  }
  // Metrics reported during the outage were queued and flushed: every step exactly once, and
  // the ones seen before the crash unchanged.
  std::map<int64_t, double> loss;
  for (const v1::MetricPoint& p : AllMetrics(client.get(), job->id())) {
    CHECK(loss.count(p.step()) == 0);
    loss[p.step()] = p.loss();
  }
  CHECK(loss.size() == kSteps);
  CHECK(loss.begin()->first == 1);
  CHECK(loss.rbegin()->first == kSteps);
  CHECK(done->last_checkpoint().step() == kSteps);
  CHECK(HasEvent(*done, "checkpoint at step 200 complete on all 2 ranks"));
  CHECK(WaitAllGone(pids, absl::Seconds(2)));
}

TEST_CASE("workers that died while kilnd was down: the gang restarts from its checkpoint",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("dead_while_down", 15));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(), MlpJob(1500, 2,
                                         "checkpoint: {every_steps: 100}\n"
                                         "fault: {restart_backoff_s: 0.2}\n"));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.last_checkpoint().step() >= 100; },
      absl::Seconds(120));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  for (pid_t pid : Pids(*mid)) kill(pid, SIGKILL);
  REQUIRE(WaitAllGone(Pids(*mid), absl::Seconds(5)));
  REQUIRE(kilnd.Start().ok());
  client = kilnd.Client();
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(180));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  CHECK(HasEvent(*done, "kilnd restarted: adopted 0 of 2 workers of attempt 1"));
  CHECK(HasEvent(*done, "rank 0 exited while kilnd was down (outcome unknown)"));
  CHECK(done->restarts() == 1);
  CHECK(done->attempt() == 2);
  CHECK(HasEvent(*done, "attempt 2: launching 2 workers on slots 0,1 from checkpoint step"));
  CHECK(done->progress().step() == 1500);
}

TEST_CASE("kill -9 kilnd without a restart: no worker outlives the grace period",
          "[integration][recovery]") {
  const double grace_s = 2;
  KilndProcess kilnd(Options("orphans", grace_s));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // Steps of seconds: asked to stop (at 3/4 of the grace without kilnd), the trainer cannot, so
  // the workers' own deadline ends them (Note [Coordinator loss] in worker/reporter.h).
  auto job = Submit(client.get(), LongStepJob(2));
  REQUIRE(job.ok());
  auto running = WaitForTraining(client.get(), job->id(), absl::Seconds(60));
  REQUIRE(running.ok());
  const absl::Time killed = absl::Now();
  kilnd.Signal(SIGKILL);
  kilnd.Wait();
  // Gone within the grace (workers count it from their last contact with kilnd), plus slack for
  // a loaded machine.
  REQUIRE(WaitAllGone(Pids(*running), absl::Seconds(grace_s + 5)));
  CHECK(absl::Now() - killed <= absl::Seconds(grace_s + 2.5));
}

TEST_CASE("queued jobs, their order and idempotency survive kill -9 kilnd",
          "[integration][recovery]") {
  KilndOptions options = Options("queued_recovery", 3);
  options.slots = 0;  // queue only
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto a = Submit(client.get(), MlpJob(10), "sub-a");
  auto b = Submit(client.get(), MlpJob(10, 1, "priority: 10\n"), "sub-b");
  auto c = Submit(client.get(), MlpJob(10), "sub-c");
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
  again.set_spec_yaml(MlpJob(10));
  again.set_submission_id("sub-a");
  again.set_base_dir("/");
  auto resubmitted = client->Submit(again);
  REQUIRE(resubmitted.ok());
  CHECK_FALSE(resubmitted->created());
  CHECK(resubmitted->job().id() == a->id());
  // New ids continue after the recovered ones.
  auto d = Submit(client.get(), MlpJob(10));
  REQUIRE(d.ok());
  CHECK(d->id() == "job-4");
}

TEST_CASE("SIGTERM drains: a running gang checkpoints, is requeued and resumes after a restart",
          "[integration][recovery]") {
  KilndProcess kilnd(Options("drain", 5));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // Two ranks: they stop at one agreed step (Note [Agreeing on a stop] in worker/stop_agreement.h).
  auto job = Submit(client.get(), MlpJob(1500, 2));
  REQUIRE(job.ok());
  auto mid = WaitFor(
      client.get(), job->id(), [](const Job& j) { return j.progress().step() >= 100; },
      absl::Seconds(120));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
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
  // Written when the workers were asked to stop, by both ranks at the same step.
  const int64_t step = requeued->last_checkpoint().step();
  CHECK(step >= 100);
  CHECK(HasEvent(*requeued, absl::StrCat("checkpoint at step ", step, " complete on all 2 ranks")));
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(180));
  REQUIRE(done.ok());
  CHECK(done->attempt() == 2);
  CHECK(done->restarts() == 0);
  CHECK(done->progress().step() == 1500);
  CHECK(Contains(Logs(client.get(), job->id()), absl::StrCat("training from step ", step)));
}

TEST_CASE("while draining, kilnd refuses new jobs", "[integration][recovery]") {
  KilndProcess kilnd(Options("drain_refuses", 3));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  // A worker that cannot stop within the grace (steps of seconds) keeps the drain going.
  auto job = Submit(client.get(), LongStepJob());
  REQUIRE(job.ok());
  REQUIRE(WaitForTraining(client.get(), job->id(), absl::Seconds(60)).ok());
  kilnd.Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(300));
  auto refused = Submit(client.get(), MlpJob(10));
  REQUIRE_FALSE(refused.ok());
  CHECK(absl::IsUnavailable(refused.status()));
  CHECK(Contains(std::string(refused.status().message()), "kilnd is draining"));
  auto nodes = client->Nodes();
  REQUIRE(nodes.ok());
  CHECK(nodes->nodes(0).draining());
  // The busy worker is killed after the grace; kilnd then exits cleanly.
  CHECK(kilnd.Wait(absl::Seconds(15)) == 0);
}

}  // namespace
}  // namespace kiln::testing
