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

namespace kiln::testing {
namespace {

using Result = CommandResult;
Result Run(const std::string& command) { return RunCommand(command); }

TEST_CASE("device: cuda without a GPU exits 2 with one line before any work", "[kiln-train]") {
  const absl::Status here = CheckDeviceAvailable(Device::CUDA(0));
  if (here.ok()) KILN_SKIP("a CUDA device is present: the no-GPU path cannot be exercised here");
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
  const Result r = Run(Runfile("worker/kiln-train") + " " + spec);
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
  const Result r = Run(Runfile("worker/kiln-train") + " " + spec);
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

TEST_CASE("device: cuda trains, checkpoints and samples like device: cpu", "[gpu][kiln-train]") {
  const absl::Status here = CheckDeviceAvailable(Device::CUDA(0));
  if (!here.ok()) KILN_SKIP("no CUDA device: " + std::string(here.message().substr(26)));
  const std::string dir = TempDir("cuda-train");
  std::vector<uint32_t> tokens(20000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 7 + i / 13) % 64;
  REQUIRE(data::WriteTokenFile(dir + "/train.bin", tokens).ok());
  for (const std::string precision : {"fp32", "bf16"}) {
    std::vector<double> losses[2];
    for (int d = 0; d < 2; ++d) {
      const std::string device = d == 0 ? "cpu" : "cuda";
      const std::string run = dir + "/" + precision + "-" + device;
      std::ofstream(run + ".yaml")
          << "name: tiny\n"
             "model: {family: gpt2, n_layer: 2, n_head: 2, d_model: 64, vocab_size: 64, "
             "max_seq_len: 32}\n"
             "data: {train: "
          << dir << "/train.bin, seq_len: 32}\n"
          << "train: {steps: 12, micro_batch: 4, precision: " << precision
          << ", optimizer: {lr: 3.0e-3}}\n"
             "checkpoint: {dir: "
          << run << "-ckpt, every_steps: 6}\n"
          << "resources: {device: " << device << "}\n";
      const Result r = Run(Runfile("worker/kiln-train") + " " + run + ".yaml --metrics-out " + run +
                           ".jsonl --sample --sample-tokens 8");
      INFO(device << " " << precision << ": " << r.output);
      REQUIRE(r.exit_code == 0);
      REQUIRE(r.output.find("---- sample ----") != std::string::npos);
      losses[d] = Losses(run + ".jsonl");
      REQUIRE(losses[d].size() == 12);
    }
    const double tol = precision == "fp32" ? 1e-3 : 3e-2;
    for (size_t s = 0; s < losses[0].size(); ++s) {
      INFO(precision << " step " << s + 1 << ": cpu " << losses[0][s] << ", cuda " << losses[1][s]);
      REQUIRE(std::abs(losses[1][s] - losses[0][s]) <= tol * losses[0][s]);
    }
  }
}

}  // namespace
}  // namespace kiln::testing
