// Data parallelism across real processes: kiln-train --nproc N (Gloo over TCP, ranks meeting
// through the launcher's TCP store).
//  - N in {1, 2, 4} x ZeRO stage in {0, 1, 2, 3}, GPT-2 and Llama, f32: every step's loss within
//    1e-5 relative of one process with the same global batch, final weights within 1e-5.
//    Bit-identity: one rank with any stage equals plain training bit for bit (checked); N ranks
//    are not bit-identical to one, because the batch's loss is summed as N partial means added
//    across ranks instead of one sum — the order changes, so the last bits do.
//  - Resharding: 4 ranks with ZeRO-3 checkpoint, 2 ranks with ZeRO-1 resume, and the losses
//    continue as an uninterrupted 4-rank run's.
//  - A rank killed mid-run makes the others fail with the collective named, and nothing hangs; a
//    rank that stops answering makes them fail at the collective timeout.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/ckpt/safetensors.h"
#include "engine/data/token_file.h"
#include "engine/dist/process.h"
#include "engine/dist/tcp_store.h"
#include "nlohmann/json.hpp"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

// RunCommand (tests/testing.h) with the output returned through `output`.
int RunCommand(const std::string& command, std::string* output) {
  CommandResult r = testing::RunCommand(command);
  *output = std::move(r.output);
  return r.exit_code;
}

std::string Spec(const std::string& dir, const std::string& family, int world, int stage,
                 int micro_batch, int steps, const std::string& extra = "") {
  std::ostringstream s;
  s << "name: dp-" << family << "\n"
    << "model: {family: " << family
    << ", n_layer: 2, n_head: 4, n_kv_head: " << (family == "llama" ? 2 : 4)
    << ", d_model: 32, d_ff: " << (family == "llama" ? 48 : 128)
    << ", vocab_size: 61, max_seq_len: 16}\n"
    << "data: {train: " << dir << "/train.bin, seq_len: 12}\n"
    << "train: {steps: " << steps << ", micro_batch: " << micro_batch
    << ", grad_clip: 0.5, optimizer: {lr: 5.0e-3, eps: 1.0e-6, weight_decay: 0.1}}\n"
    << "parallel: {dp: " << world << ", zero_stage: " << stage << ", bucket_mb: 0.004}\n"
    << "resources: {workers: " << world << "}\n"
    << extra;
  const std::string path = dir + "/" + family + "-" + std::to_string(world) + "-" +
                           std::to_string(stage) + "-" + std::to_string(steps) + ".yaml";
  std::ofstream(path) << s.str();
  return path;
}

void WriteData(const std::string& dir) {
  REQUIRE(data::WriteTokenFile(dir + "/train.bin", RandomTokens(20000, 61, 7)).ok());
}

std::vector<double> Losses(const std::string& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::map<std::string, std::vector<float>> Weights(const std::string& path) {
  auto f = ckpt::SafetensorsFile::Open(path);
  REQUIRE(f.ok());
  std::map<std::string, std::vector<float>> w;
  for (const auto& e : (*f)->entries()) w[e.name] = (*f)->ReadAsF32(e).ToFloats();
  return w;
}

struct Run {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> weights;
};

Run Train(const std::string& dir, const std::string& spec, int nproc, const std::string& tag,
          const std::string& extra_flags = "") {
  const std::string metrics = dir + "/" + tag + ".jsonl";
  const std::string weights = dir + "/" + tag + "/model.safetensors";
  std::remove(metrics.c_str());
  std::string out;
  const int rc = RunCommand(Runfile("worker/kiln-train") + " " + spec + " --nproc " +
                                std::to_string(nproc) + " --threads 1 --metrics-out " + metrics +
                                " --save-final " + weights + " " + extra_flags,
                            &out);
  INFO(out);
  REQUIRE(rc == 0);
  return {Losses(metrics), Weights(weights)};
}

void CheckFamily(const std::string& family) {
  const std::string dir = TempDir("dp-proc-" + family);
  WriteData(dir);
  const Run one = Train(dir, Spec(dir, family, 1, 0, 4, 6), 1, "ref");
  REQUIRE(one.losses.size() == 6);
  for (int world : {1, 2, 4}) {
    for (int stage : {0, 1, 2, 3}) {
      INFO(family << ", " << world << " processes, ZeRO stage " << stage);
      const Run dp = Train(dir, Spec(dir, family, world, stage, 4 / world, 6), world,
                           "w" + std::to_string(world) + "s" + std::to_string(stage));
      REQUIRE(dp.losses.size() == one.losses.size());
      for (size_t i = 0; i < one.losses.size(); ++i) {
        INFO("step " << i + 1 << ": " << dp.losses[i] << " vs " << one.losses[i]);
        if (world == 1) {
          REQUIRE(dp.losses[i] == one.losses[i]);  // bit-identical on one rank
        } else {
          REQUIRE(std::fabs(dp.losses[i] - one.losses[i]) <= 1e-5 * std::fabs(one.losses[i]));
        }
      }
      for (const auto& [name, w] : one.weights) {
        INFO("final weight " << name);
        if (world == 1) {
          REQUIRE(dp.weights.at(name) == w);
        } else {
          KILN_REQUIRE_CLOSE(dp.weights.at(name), w, 1e-5);
        }
      }
    }
  }
}

TEST_CASE("GPT-2 over 1, 2 and 4 processes, every ZeRO stage, equals one process", "[dp][gloo]") {
  CheckFamily("gpt2");
}

TEST_CASE("Llama over 1, 2 and 4 processes, every ZeRO stage, equals one process", "[dp][gloo]") {
  CheckFamily("llama");
}

TEST_CASE("4 ranks with ZeRO-3 checkpoint, 2 ranks with ZeRO-1 resume: same losses", "[dp][gloo]") {
  const std::string dir = TempDir("dp-reshard");
  WriteData(dir);
  const Run straight = Train(dir, Spec(dir, "gpt2", 4, 3, 1, 8), 4, "straight");
  const std::string ckpt = "checkpoint: {dir: " + dir + "/run, every_steps: 4}\n";
  Train(dir, Spec(dir, "gpt2", 4, 3, 1, 8, ckpt), 4, "first-half", "--steps 4");
  const Run resumed =
      Train(dir, Spec(dir, "gpt2", 2, 1, 2, 8, ckpt), 2, "second-half", "--resume " + dir + "/run");
  REQUIRE(resumed.losses.size() == 4);  // steps 5..8
  for (int i = 0; i < 4; ++i) {
    INFO("step " << i + 5 << ": resumed " << resumed.losses[i] << " straight "
                 << straight.losses[4 + i]);
    REQUIRE(std::fabs(resumed.losses[i] - straight.losses[4 + i]) <=
            1e-5 * std::fabs(straight.losses[4 + i]));
  }
  for (const auto& [name, w] : straight.weights) {
    INFO("final weight " << name);
    KILN_REQUIRE_CLOSE(resumed.weights.at(name), w, 1e-5);
  }
}

// Two ranks started by hand (no launcher that would stop the survivor first), meeting through a
// TCP store this test hosts, with a 20 s collective timeout; once rank 0 has finished a step,
// rank 1 gets `signal`. Returns rank 0's exit code, its log and how long it took to exit.
struct Survivor {
  int code = -1;
  std::string log;
  double seconds = 0;
};
constexpr int kCollectiveTimeoutS = 20;

Survivor SignalRankMidRun(int signal, const std::string& name) {
  const std::string dir = TempDir(name);
  WriteData(dir);
  const std::string spec = Spec(dir, "gpt2", 2, 2, 2, 100000);
  dist::TcpStoreOptions so;
  so.is_host = true;
  auto host = dist::TcpStore::Create(so);
  REQUIRE(host.ok());
  const std::string addr = "127.0.0.1:" + std::to_string((*host)->port());
  std::vector<dist::Process> ranks;
  for (int r = 0; r < 2; ++r) {
    dist::ProcessOptions po;
    po.argv = {Runfile("worker/kiln-train"),
               spec,
               "--threads",
               "1",
               "--rank",
               std::to_string(r),
               "--world-size",
               "2",
               "--store",
               addr,
               "--collective-timeout",
               std::to_string(kCollectiveTimeoutS)};
    if (r == 0) po.argv.insert(po.argv.end(), {"--metrics-out", dir + "/rank0.jsonl"});
    po.output_path = dir + "/rank" + std::to_string(r) + ".log";
    auto p = dist::Process::Spawn(po);
    REQUIRE(p.ok());
    ranks.push_back(std::move(*p));
  }
  // Mid-run: rank 0 has finished a step, so both ranks are past the rendezvous and exchanging
  // gradients. (Killed during the rendezvous, a rank leaves the others waiting for its address
  // until the rendezvous timeout instead: a different case, and a slow machine can start the ranks
  // more than a fixed sleep late.)
  const auto started = std::chrono::steady_clock::now();
  while (Losses(dir + "/rank0.jsonl").empty()) {
    REQUIRE(std::chrono::steady_clock::now() - started < std::chrono::seconds(120));
    REQUIRE_FALSE(ranks[0].Wait(absl::Milliseconds(100)).ok());  // still training
  }
  REQUIRE_FALSE(ranks[0].Wait(absl::ZeroDuration()).ok());  // still training
  REQUIRE(ranks[1].Signal(signal).ok());
  const auto start = std::chrono::steady_clock::now();
  auto code = ranks[0].Wait(absl::Seconds(kCollectiveTimeoutS + 60));
  Survivor out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ifstream in(dir + "/rank0.log");
  out.log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  INFO("after " << out.seconds << " s, rank 0's log: "
                << out.log.substr(out.log.size() > 2000 ? out.log.size() - 2000 : 0));
  REQUIRE(code.ok());  // the survivor did not hang
  out.code = *code;
  return out;
}

TEST_CASE("a rank killed mid-run fails the others with the collective named", "[dp][gloo]") {
  // The survivor fails at once when the transport sees the peer's connection end, or at the
  // collective timeout when it cannot (Note [A dead peer during a send] in
  // engine/dist/gloo_backend.cc): either way with the collective named.
  const Survivor s = SignalRankMidRun(SIGKILL, "dp-kill");
  INFO(s.log.substr(s.log.size() > 2000 ? s.log.size() - 2000 : 0));
  REQUIRE(s.code == 1);
  REQUIRE(s.log.find("on rank 0 of 2 (gloo") != std::string::npos);  // names the collective
  REQUIRE(s.seconds < kCollectiveTimeoutS + 30);
}

TEST_CASE("a rank that stops answering fails the others at the collective timeout", "[dp][gloo]") {
  // SIGSTOP: the peer's connections stay open and nothing arrives, so only the deadline ends the
  // wait: the path a dead peer takes when the transport cannot tell.
  const Survivor s = SignalRankMidRun(SIGSTOP, "dp-stop");
  INFO("after " << s.seconds
                << " s: " << s.log.substr(s.log.size() > 2000 ? s.log.size() - 2000 : 0));
  REQUIRE(s.code == 1);
  REQUIRE(s.log.find("on rank 0 of 2 (gloo") != std::string::npos);
  REQUIRE(s.seconds >= kCollectiveTimeoutS - 5);  // it waited for the timeout, not less
  REQUIRE(s.seconds < kCollectiveTimeoutS + 30);
}

// The process whose parent is `parent` and whose arguments hold `--rank RANK`, found through
// /proc: only the launcher's own children can match, never another test's ranks. -1 if none.
pid_t RankChild(pid_t parent, int rank) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat_file(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    pid_t ppid = -1;
    fields >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream cmd_file(entry.path() / "cmdline");
    std::vector<std::string> argv;
    for (std::string arg; std::getline(cmd_file, arg, '\0');) argv.push_back(arg);
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "--rank" && argv[i + 1] == std::to_string(rank)) return std::stoi(name);
    }
  }
  return -1;
}

TEST_CASE("the launcher stops the gang when one rank dies and says which", "[dp][gloo]") {
  const std::string dir = TempDir("dp-launcher-kill");
  WriteData(dir);
  const std::string spec = Spec(dir, "gpt2", 2, 0, 2, 100000);
  dist::ProcessOptions po;
  po.argv = {Runfile("worker/kiln-train"), spec, "--nproc", "2", "--threads", "1", "--metrics-out",
             dir + "/metrics.jsonl"};
  po.output_path = dir + "/launcher.log";
  auto launcher = dist::Process::Spawn(po);
  REQUIRE(launcher.ok());
  // Once rank 0 has finished a step, both ranks run (a fixed sleep could be early on a loaded
  // machine).
  const auto started = std::chrono::steady_clock::now();
  while (Losses(dir + "/metrics.jsonl").empty()) {
    REQUIRE(std::chrono::steady_clock::now() - started < std::chrono::seconds(120));
    REQUIRE_FALSE(launcher->Wait(absl::Milliseconds(100)).ok());  // still training
  }
  const pid_t rank1 = RankChild(launcher->pid(), 1);
  REQUIRE(rank1 > 0);
  REQUIRE(kill(rank1, SIGKILL) == 0);
  auto code = launcher->Wait(absl::Seconds(60));
  REQUIRE(code.ok());
  REQUIRE(*code != 0);
  std::ifstream in(dir + "/launcher.log");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(text.substr(text.size() > 2000 ? text.size() - 2000 : 0));
  REQUIRE(text.find("rank 1: killed by signal 9") != std::string::npos);
}

}  // namespace
}  // namespace kiln::testing

namespace kiln::testing {
namespace {

// An MLP whose parameters leave alignment gaps in the flat buffers (odd widths): 2 ranks, ZeRO 0
// and 2, 20 steps straight against 10 + resume + 10, bit for bit.
TEST_CASE("2 ranks resume exactly across alignment gaps, ZeRO 0 and 2", "[dp][gloo][resume]") {
  const std::string dir = TempDir("dp-mlp-resume");
  for (int stage : {0, 2}) {
    const std::string spec_path = dir + "/mlp" + std::to_string(stage) + ".yaml";
    const std::string run = dir + "/run" + std::to_string(stage);
    std::ofstream(spec_path)
        << "name: mlp\n"
        << "model: {family: mlp, n_layer: 3, d_in: 13, d_ff: 27, vocab_size: 5}\n"
        << "train: {steps: 20, micro_batch: 4, seed: 3, optimizer: {lr: 0.01}}\n"
        << "parallel: {dp: 2, zero_stage: " << stage << "}\n"
        << "resources: {workers: 2}\n"
        << "checkpoint: {dir: " << run << ", every_steps: 10}\n";
    const Run straight = Train(dir, spec_path, 2, "straight" + std::to_string(stage));
    std::filesystem::remove_all(run);
    Train(dir, spec_path, 2, "half" + std::to_string(stage), "--steps 10");
    const Run resumed = Train(dir, spec_path, 2, "rest" + std::to_string(stage), "--resume " + run);
    INFO("ZeRO stage " << stage);
    REQUIRE(resumed.losses.size() == 10);
    for (int i = 0; i < 10; ++i) REQUIRE(resumed.losses[i] == straight.losses[10 + i]);
    for (const auto& [name, w] : straight.weights) REQUIRE(resumed.weights.at(name) == w);
  }
}

}  // namespace
}  // namespace kiln::testing
