// Data-parallel training through the service (issue 5): `kiln submit` of a GPT-2 with
// resources.workers 2 and parallel {dp: 2, zero_stage: 2} runs two kiln-worker processes launched
// by kilnd that rendezvous through its key-value store and train to success with sharded
// checkpoints; the same job with one rank killed by SIGKILL mid-run is restarted as a gang from the
// sharded checkpoint and reproduces the uninterrupted run's losses bit for bit.
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

constexpr int kSteps = 300;

// Loss by step of one attempt's metric points.
std::map<int64_t, double> LossByStep(const std::vector<v1::MetricPoint>& points, int attempt) {
  std::map<int64_t, double> out;
  for (const v1::MetricPoint& p : points) {
    if (p.attempt() == attempt) out[p.step()] = p.loss();
  }
  return out;
}

TEST_CASE(
    "kiln submit of a dp=2 ZeRO-2 GPT-2: a killed rank restarts the gang from the sharded "
    "checkpoint and the run ends with the uninterrupted run's loss",
    "[integration][trainer]") {
  const std::string dir = TempDir("dp2_zero2");
  auto tokens = PrepareTokens(dir);
  REQUIRE(tokens.ok());
  KilndOptions options;
  options.state_dir = dir + "/state";
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  const std::string spec = WriteFile(dir, "gpt-dp2.yaml",
                                     GptJob(*tokens, kSteps, /*workers=*/2, /*zero_stage=*/2,
                                            "checkpoint: {every_steps: 50}\n"
                                            "fault: {max_restarts: 2, restart_backoff_s: 0.2}\n"));

  // The uninterrupted run, followed to its end by the CLI.
  CliRun r = RunCli({"--server", kilnd.address(), "submit", "-f", spec, "--follow"}, dir);
  INFO(r.out << r.err << kilnd.Log());
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "job-1 SUCCEEDED"));
  auto reference = client->GetJob("job-1", /*include_events=*/true);
  REQUIRE(reference.ok());
  CHECK(reference->spec().parallel().dp() == 2);
  CHECK(reference->spec().parallel().zero_stage() == 2);
  REQUIRE(reference->ranks_size() == 2);
  for (const v1::RankStatus& rank : reference->ranks()) CHECK(rank.exit_code() == 0);
  const std::string logs = Logs(client.get(), "job-1");
  CHECK(Contains(logs, "rendezvous: all 2 ranks present"));
  CHECK(reference->last_checkpoint().step() == kSteps);
  const std::filesystem::path ckpt = reference->last_checkpoint().path();
  CHECK(std::filesystem::exists(ckpt / "optimizer-00000-of-00002.safetensors"));
  CHECK(std::filesystem::exists(ckpt / "optimizer-00001-of-00002.safetensors"));
  const std::map<int64_t, double> want = LossByStep(AllMetrics(client.get(), "job-1"), 1);
  REQUIRE(want.size() == kSteps);
  CHECK(want.rbegin()->second < want.begin()->second - 1.0);  // it learned (from ~5.5)

  // The same spec again; rank 1 is killed once a checkpoint past step 100 is complete.
  r = RunCli({"--server", kilnd.address(), "submit", "-f", spec, "--json"}, dir);
  REQUIRE(r.code == 0);
  REQUIRE(Contains(r.out, "\"id\": \"job-2\""));
  auto mid = WaitFor(
      client.get(), "job-2",
      [](const v1::Job& j) {
        return j.last_checkpoint().step() >= 100 || client::IsTerminal(j.state());
      },
      absl::Seconds(180));
  REQUIRE(mid.ok());
  REQUIRE(mid->state() == v1::RUNNING);
  REQUIRE(mid->progress().step() < kSteps);
  REQUIRE(kill(mid->ranks(1).pid(), SIGKILL) == 0);
  auto done = WaitForEnd(client.get(), "job-2", absl::Seconds(180));
  INFO(kilnd.Log());
  REQUIRE(done.ok());
  REQUIRE(done->state() == v1::SUCCEEDED);
  CHECK(done->restarts() == 1);
  CHECK(HasEvent(*done, "rank 1 was killed by signal 9 (SIGKILL)"));
  const v1::JobEvent* relaunch = FindEvent(*done, "attempt 2: launching 2 workers");
  REQUIRE(relaunch != nullptr);
  const int64_t from = NumberAfter(relaunch->message(), "from checkpoint step ");
  CHECK(from >= 100);

  // Every step of both attempts equals the uninterrupted run's: exact resume from the shards
  // (data position, RNG, Adam moments) and deterministic reductions make it bit-identical.
  const std::vector<v1::MetricPoint> points = AllMetrics(client.get(), "job-2");
  const std::map<int64_t, double> first = LossByStep(points, 1);
  const std::map<int64_t, double> second = LossByStep(points, 2);
  REQUIRE(!second.empty());
  CHECK(second.begin()->first == from + 1);
  CHECK(second.rbegin()->first == kSteps);
  int mismatched = 0;
  for (const auto* attempt : {&first, &second}) {
    for (const auto& [step, loss] : *attempt) {
      if (loss != want.at(step)) ++mismatched;
    }
  }
  CHECK(mismatched == 0);
  const double final_want = want.at(kSteps);
  const double final_got = done->progress().loss();
  INFO("final loss " << final_got << " vs uninterrupted " << final_want);
  CHECK(std::fabs(final_got - final_want) <= 1e-5 * std::fabs(final_want));
  CHECK(final_got == final_want);
  CHECK(WaitAllGone(Pids(*mid), absl::Seconds(1)));
  CHECK(WaitAllGone(Pids(*done), absl::Seconds(1)));
}

}  // namespace
}  // namespace kiln::testing
