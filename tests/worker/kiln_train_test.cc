// kiln-train as a user runs it (a real process): bad input of every kind exits 2 with one line
// naming what and where; a disk that fills during a checkpoint is reported, not a crash; a process
// killed at any moment while checkpointing leaves a checkpoint that --resume loads; --save-final
// writes Hugging Face names and --sample prints text.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "engine/ckpt/checkpoint.h"
#include "engine/ckpt/safetensors.h"
#include "engine/data/token_file.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using Result = CommandResult;
Result Run(const std::string& command) { return RunCommand(command); }

std::string KilnTrain() { return Runfile("worker/kiln-train"); }

// A tiny GPT spec; `extra` is appended (YAML), `data` names the token file.
std::string WriteSpec(const std::string& dir, const std::string& name, const std::string& body) {
  const std::string path = dir + "/" + name + ".yaml";
  std::ofstream(path) << body;
  return path;
}

std::string TinySpec(const std::string& data, const std::string& extra = "") {
  return "name: tiny\n"
         "model: {family: gpt2, n_layer: 2, n_head: 2, d_model: 32, vocab_size: 64, "
         "max_seq_len: 16}\n"
         "data: {train: " + data + ", seq_len: 16}\n"
         "train: {steps: 6, micro_batch: 2, optimizer: {lr: 1.0e-3}}\n" + extra;
}

void WriteTokens(const std::string& path, int n, int vocab) {
  std::vector<uint32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 7 + 3) % vocab;
  REQUIRE(data::WriteTokenFile(path, t).ok());
}

int CountLines(const std::string& s) {
  int lines = 0;
  for (char c : s) lines += c == '\n';
  return lines;
}

TEST_CASE("bad input exits 2 with one line saying what and where", "[kiln-train]") {
  const std::string dir = TempDir("bad-input");
  WriteTokens(dir + "/ok.bin", 4000, 64);
  WriteTokens(dir + "/big.bin", 4000, 100);  // ids up to 99 >= vocab 64
  std::ofstream(dir + "/garbage.safetensors") << "this is not a safetensors file at all";

  struct Case {
    std::string name, spec, flags, expect;
  };
  const std::vector<Case> cases = {
      {"missing data", TinySpec(dir + "/nope.bin"), "", "nope.bin"},
      {"token out of range", TinySpec(dir + "/big.bin"), "", "is not below model.vocab_size 64"},
      {"unreadable checkpoint", TinySpec(dir + "/ok.bin"), "--init-from " + dir + "/garbage.safetensors",
       "garbage.safetensors"},
      {"bad precision", TinySpec(dir + "/ok.bin", "") + "", "", ""},
      {"missing resume", TinySpec(dir + "/ok.bin"), "--resume " + dir + "/no-such-run", "no-such-run"},
  };
  for (const Case& c : cases) {
    if (c.name == "bad precision") continue;
    INFO(c.name);
    const Result r = Run(KilnTrain() + " " + WriteSpec(dir, "spec", c.spec) + " " + c.flags);
    INFO(r.output);
    REQUIRE(r.exit_code == 2);
    REQUIRE(CountLines(r.output) == 1);
    REQUIRE(r.output.find(c.expect) != std::string::npos);
  }
  // A spec error names the field path, the value and what is allowed.
  std::string spec = TinySpec(dir + "/ok.bin");
  spec.replace(spec.find("optimizer: {lr: 1.0e-3}"), 23, "precision: fp8, optimizer: {lr: 1.0e-3}");
  const Result r = Run(KilnTrain() + " " + WriteSpec(dir, "fp8", spec));
  INFO(r.output);
  REQUIRE(r.exit_code == 2);
  REQUIRE(r.output.find("train.precision") != std::string::npos);
  REQUIRE(r.output.find("fp8") != std::string::npos);
  REQUIRE(r.output.find("fp32, bf16, fp16") != std::string::npos);
}

TEST_CASE("weights of another shape name the tensor and both shapes", "[kiln-train]") {
  const std::string dir = TempDir("shape-mismatch");
  WriteTokens(dir + "/ok.bin", 4000, 64);
  // Train and export a model with d_model 32, then load it into one with d_model 48.
  Result r = Run(KilnTrain() + " " + WriteSpec(dir, "a", TinySpec(dir + "/ok.bin")) +
                 " --steps 1 --save-final " + dir + "/out/model.safetensors");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::string wide = TinySpec(dir + "/ok.bin");
  wide.replace(wide.find("d_model: 32"), 11, "d_model: 48");
  r = Run(KilnTrain() + " " + WriteSpec(dir, "b", wide) + " --init-from " + dir +
          "/out/model.safetensors");
  INFO(r.output);
  REQUIRE(r.exit_code == 2);
  // Tensors are checked in file order; the first differing one is reported.
  REQUIRE(r.output.find("h.0.attn.c_attn.bias has shape [96] but the model expects [144]") !=
          std::string::npos);
  // The exported file uses Hugging Face names (and a config.json sits beside it).
  auto f = ckpt::SafetensorsFile::Open(dir + "/out/model.safetensors");
  REQUIRE(f.ok());
  REQUIRE((*f)->Find("h.1.attn.c_attn.weight") != nullptr);
  REQUIRE((*f)->Find("ln_f.bias") != nullptr);
  REQUIRE(std::filesystem::exists(dir + "/out/config.json"));
}

TEST_CASE("a disk that fills during a checkpoint is a clear error, exit 2", "[kiln-train]") {
  const std::string dir = TempDir("disk-full");
  WriteTokens(dir + "/ok.bin", 4000, 64);
  const std::string spec = WriteSpec(
      dir, "spec", TinySpec(dir + "/ok.bin", "checkpoint: {dir: " + dir + "/run, every_steps: 2}\n"));
  // 64 KiB per file: the checkpoint's safetensors files do not fit.
  const Result r = Run("ulimit -f 64; " + KilnTrain() + " " + spec);
  INFO(r.output);
  REQUIRE(r.exit_code == 2);
  REQUIRE(r.output.find("writing checkpoint") != std::string::npos);
  REQUIRE(r.output.find("File too large") != std::string::npos);
}

TEST_CASE("killed at random moments while checkpointing, the run always resumes", "[kiln-train]") {
  const std::string dir = TempDir("kill-resume");
  WriteTokens(dir + "/ok.bin", 4000, 64);
  std::string body = TinySpec(dir + "/ok.bin", "checkpoint: {dir: " + dir + "/run, every_steps: 1, keep: 2}\n");
  // Far more steps than the kill loop can reach, so every trial is cut short whatever the
  // machine's speed; the final resume then runs a few steps past the newest checkpoint.
  body.replace(body.find("steps: 6"), 8, "steps: 1000000");
  const std::string spec = WriteSpec(dir, "spec", body);
  std::mt19937 rng(3);
  int kills = 0;
  for (int trial = 0; trial < 8; ++trial) {
    const bool resume = std::filesystem::exists(dir + "/run/latest");
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string bin = KilnTrain();
      if (resume) {
        const std::string run = dir + "/run";
        execl(bin.c_str(), bin.c_str(), spec.c_str(), "--resume", run.c_str(), nullptr);
      } else {
        execl(bin.c_str(), bin.c_str(), spec.c_str(), nullptr);
      }
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    kills += WIFSIGNALED(status);
    // Whatever moment the kill hit, the newest complete checkpoint resolves and has its files.
    auto ckpt = ckpt::ResolveCheckpoint(dir + "/run");
    if (!ckpt.ok()) continue;  // killed before the first checkpoint
    REQUIRE(std::filesystem::exists(*ckpt + "/model.safetensors"));
    REQUIRE(ckpt::SafetensorsFile::Open(*ckpt + "/model.safetensors").ok());
    REQUIRE(ckpt::SafetensorsFile::Open(*ckpt + "/optimizer-00000-of-00001.safetensors").ok());
  }
  REQUIRE(kills == 8);
  auto newest = ckpt::ResolveCheckpoint(dir + "/run");
  REQUIRE(newest.ok());
  const std::string name = std::filesystem::path(*newest).filename().string();
  REQUIRE(name.rfind("step-", 0) == 0);
  const int64_t reached = std::stoll(name.substr(5));
  const Result r = Run(KilnTrain() + " " + spec + " --resume " + dir + "/run --steps " +
                       std::to_string(reached + 3));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

TEST_CASE("--sample prints generated text from the trained model", "[kiln-train]") {
  const std::string dir = TempDir("sample");
  std::vector<uint32_t> t;
  const std::string text = "the quick brown fox jumps over the lazy dog. ";
  for (int i = 0; i < 200; ++i) {
    for (unsigned char c : text) t.push_back(c);
  }
  REQUIRE(data::WriteTokenFile(dir + "/text.bin", t).ok());
  const std::string spec = WriteSpec(
      dir, "spec",
      "name: s\nmodel: {family: llama, n_layer: 2, n_head: 2, n_kv_head: 1, d_model: 32, d_ff: 64, "
      "vocab_size: 256, max_seq_len: 32}\n"
      "data: {train: " + dir + "/text.bin, seq_len: 32}\n"
      "train: {steps: 150, micro_batch: 8, optimizer: {lr: 1.0e-2}}\n"
      "checkpoint: {dir: " + dir + "/run}\n");
  const Result r = Run(KilnTrain() + " " + spec + " --sample --prompt 'the quick' --sample-tokens 30");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.output.find("---- sample ----") != std::string::npos);
  REQUIRE(r.output.find("the quick brown") != std::string::npos);  // it learned the sentence
}

}  // namespace
}  // namespace kiln::testing
