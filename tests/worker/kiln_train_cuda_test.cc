// kiln-train with `device: cuda` (real processes). Without a usable GPU it fails before any work —
// the spec's data file does not even exist — with exit code 2 and exactly one line
// "kiln-train: no CUDA device available: <the driver's reason>". [gpu]: with a device, a small
// GPT trains on CUDA like on the CPU (per-step losses), checkpoints, and samples.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "engine/core/device_runtime.h"
#include "engine/data/token_file.h"
#include "nlohmann/json.hpp"
#include "tests/testing.h"

// The kiln-train binary under test: the real one, or its twin on the kernel emulation
// (kiln_train_cuda_emulated_test).
#ifndef KILN_TRAIN_BINARY
#define KILN_TRAIN_BINARY "worker/kiln-train"
#endif

namespace kiln::testing {
namespace {

using Result = CommandResult;
Result Run(const std::string& command) { return RunCommand(command); }

TEST_CASE("device: cuda without a GPU exits 2 with one line before any work", "[kiln-train]") {
  const absl::Status here = CheckDeviceAvailable(Device::CUDA(0));
  if (here.ok()) {
    KILN_SKIP(
        "a CUDA device (or the kernel emulation) is present: the no-GPU path cannot be exercised "
        "here");
  }
  const std::string dir = TempDir("cuda-spec");
  const std::string spec = dir + "/job.yaml";
  std::ofstream(spec) << "name: tiny\n"
                         "model: {family: gpt2, n_layer: 1, n_head: 2, d_model: 32, "
                         "vocab_size: 64, max_seq_len: 16}\n"
                         "data: {train: "
                      << dir
                      << "/does-not-exist.bin, seq_len: 16}\n"
                         "train: {steps: 2, micro_batch: 2}\n"
                         "resources: {device: cuda}\n";
  const Result r = Run(Runfile(KILN_TRAIN_BINARY) + " " + spec);
  INFO(r.output);
  REQUIRE(r.exit_code == 2);
  REQUIRE(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  REQUIRE(r.output.rfind("kiln-train: no CUDA device available: ", 0) == 0);
  // The driver's own reason follows (here the test binary sees the same machine).
  REQUIRE(r.output.find(std::string(here.message().substr(26))) != std::string::npos);
  REQUIRE(r.output.find("does-not-exist") == std::string::npos);  // failed before the data
}

TEST_CASE("device: cpu is unaffected by the CUDA check", "[kiln-train]") {
  const std::string dir = TempDir("cpu-spec");
  const std::string spec = dir + "/job.yaml";
  std::ofstream(spec) << "name: tiny\n"
                         "model: {family: mlp, n_layer: 2, d_in: 8, d_ff: 16, vocab_size: 4}\n"
                         "train: {steps: 2, micro_batch: 4}\n"
                         "resources: {device: cpu}\n";
  const Result r = Run(Runfile(KILN_TRAIN_BINARY) + " " + spec);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.output.find("CUDA") == std::string::npos);
}

std::vector<double> Losses(const std::string& metrics) {
  std::vector<double> losses;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

// A tiny GPT-2 on a token file in `dir` (written on first use), trained `steps` steps on
// `device` with checkpoints every 6 steps into `ckpt`; returns the losses it logged.
std::vector<double> TrainTiny(const std::string& dir, const std::string& name,
                              const std::string& precision, const std::string& device, int steps,
                              const std::string& ckpt, const std::string& extra_flags = "") {
  if (!std::ifstream(dir + "/train.bin").good()) {
    std::vector<uint32_t> tokens(20000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 7 + i / 13) % 64;
    REQUIRE(data::WriteTokenFile(dir + "/train.bin", tokens).ok());
  }
  const std::string run = dir + "/" + name;
  std::ofstream(run + ".yaml") << "name: tiny\n"
                                  "model: {family: gpt2, n_layer: 2, n_head: 2, d_model: 64, "
                                  "vocab_size: 64, max_seq_len: 32}\n"
                                  "data: {train: "
                               << dir << "/train.bin, seq_len: 32}\n"
                               << "train: {steps: " << steps
                               << ", micro_batch: 4, precision: " << precision
                               << ", optimizer: {lr: 3.0e-3}}\n"
                                  "checkpoint: {dir: "
                               << ckpt << ", every_steps: 6}\n"
                               << "resources: {device: " << device << "}\n";
  const Result r = Run(Runfile(KILN_TRAIN_BINARY) + " " + run + ".yaml --metrics-out " + run +
                       ".jsonl " + extra_flags);
  INFO(name << ": " << r.output);
  REQUIRE(r.exit_code == 0);
  if (extra_flags.find("--sample") != std::string::npos) {
    REQUIRE(r.output.find("---- sample ----") != std::string::npos);
  }
  return Losses(run + ".jsonl");
}

TEST_CASE("device: cuda trains, checkpoints and samples like device: cpu", "[gpu][kiln-train]") {
  const absl::Status here = CheckDeviceAvailable(Device::CUDA(0));
  if (!here.ok()) KILN_SKIP("no CUDA device: " + std::string(here.message().substr(26)));
  const std::string dir = TempDir("cuda-train");
  for (const std::string precision : {"fp32", "bf16"}) {
    std::vector<double> losses[2];
    for (int d = 0; d < 2; ++d) {
      const std::string device = d == 0 ? "cpu" : "cuda";
      const std::string run = precision + "-" + device;
      losses[d] = TrainTiny(dir, run, precision, device, 12, dir + "/" + run + "-ckpt",
                            "--sample --sample-tokens 8");
      REQUIRE(losses[d].size() == 12);
    }
    const double tol = precision == "fp32" ? 1e-3 : 3e-2;
    for (size_t s = 0; s < losses[0].size(); ++s) {
      INFO(precision << " step " << s + 1 << ": cpu " << losses[0][s] << ", cuda " << losses[1][s]);
      REQUIRE(std::abs(losses[1][s] - losses[0][s]) <= tol * losses[0][s]);
    }
  }
}

TEST_CASE("a CUDA checkpoint resumes on CUDA and on the CPU with the same losses",
          "[gpu][kiln-train]") {
  const absl::Status here = CheckDeviceAvailable(Device::CUDA(0));
  if (!here.ok()) KILN_SKIP("no CUDA device: " + std::string(here.message().substr(26)));
  const std::string dir = TempDir("cuda-resume");
  const std::vector<double> whole = TrainTiny(dir, "whole", "fp32", "cuda", 12, dir + "/whole");
  REQUIRE(whole.size() == 12);
  REQUIRE(TrainTiny(dir, "first-half", "fp32", "cuda", 6, dir + "/half").size() == 6);
  // --resume takes the newest checkpoint (step 6: weights, the device AdamW's moments and the
  // data position); steps 7..12 must retrace the uninterrupted run, on the device and on the CPU.
  const std::vector<double> on_cuda = TrainTiny(dir, "resumed-cuda", "fp32", "cuda", 12,
                                                dir + "/resumed-cuda", "--resume " + dir + "/half");
  const std::vector<double> on_cpu = TrainTiny(dir, "resumed-cpu", "fp32", "cpu", 12,
                                               dir + "/resumed-cpu", "--resume " + dir + "/half");
  REQUIRE(on_cuda.size() == 6);
  REQUIRE(on_cpu.size() == 6);
  for (size_t s = 0; s < 6; ++s) {
    INFO("step " << s + 7 << ": whole " << whole[s + 6] << ", resumed on cuda " << on_cuda[s]
                 << ", resumed on cpu " << on_cpu[s]);
    CHECK(std::abs(on_cuda[s] - whole[s + 6]) <= 1e-5 * whole[s + 6]);
    CHECK(std::abs(on_cpu[s] - whole[s + 6]) <= 1e-3 * whole[s + 6]);
  }
}

}  // namespace
}  // namespace kiln::testing
