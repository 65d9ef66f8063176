// kilnd with kiln-worker exactly as shipped. Until engine/train lands the worker is linked with
// worker/trainer_pending_stub.cc: the job must then fail honestly (retried, then FAILED with the
// stub's reason) and leave no process behind. With the real trainer, the same job succeeds.
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("a job on the shipped kiln-worker ends with the trainer's outcome and no process left",
          "[integration]") {
  KilndOptions options;
  options.state_dir = TempDir("shipped");
  options.worker_binary = WorkerBinary();
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  auto job = Submit(client.get(),
                    "name: shipped\n"
                    "model: {family: mlp, n_layer: 2, d_in: 8, d_ff: 16, vocab_size: 4}\n"
                    "train: {steps: 5, micro_batch: 4}\n"
                    "fault: {max_restarts: 1, restart_backoff_s: 0.1}\n");
  REQUIRE(job.ok());
  auto done = WaitFor(
      client.get(), job->id(), [](const v1::Job& j) { return client::IsTerminal(j.state()); },
      absl::Seconds(120));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  std::vector<pid_t> pids;
  for (const v1::RankStatus& r : done->ranks()) pids.push_back(r.pid());
  CHECK(WaitAllGone(pids, absl::Seconds(1)));
  if (Contains(done->reason(), "the trainer has not landed yet")) {
    CHECK(done->state() == v1::FAILED);
    CHECK(done->attempt() == 2);  // exit code 1 is retried once (max_restarts: 1)
    CHECK(done->restarts() == 1);
    CHECK(Contains(done->reason(), "rank 0 exited with code 1: UNIMPLEMENTED"));
    CHECK(Contains(done->reason(), "no restarts left (fault.max_restarts = 1)"));
    CHECK(done->ranks(0).exit_code() == 1);
  } else {
    CHECK(done->state() == v1::SUCCEEDED);
    CHECK(done->progress().step() == 5);
  }
}

}  // namespace
}  // namespace kiln::testing
