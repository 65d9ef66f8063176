// The spec library: the good corpus and the shipped configs/ load with their defaults, every file
// of the bad corpus is refused with the error its first line names (`# expect: ...`), and each
// error class reports the field path and the line and column where the field sits.
#include "proto/spec_loader.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "proto/spec_defaults.h"
#include "proto/spec_validate.h"
#include "tests/testing.h"

namespace kiln::spec {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> CorpusFiles(const std::string& kind) {
  const std::string dir = testing::Runfile("tests/scheduler/specs/" + kind);
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

constexpr char kMlp[] = R"(model: {family: mlp, n_layer: 1, d_in: 4, d_ff: 4, vocab_size: 2}
train: {steps: 10, micro_batch: 1}
)";

absl::Status Load(const std::string& text) {
  LoadOptions options;
  options.source_name = "job.yaml";
  options.base_dir = "/jobs";
  return LoadSpecYaml(text, options).status();
}

TEST_CASE("the good corpus loads", "[spec]") {
  const auto files = CorpusFiles("good");
  REQUIRE(files.size() >= 3);
  for (const std::string& file : files) {
    INFO(file);
    auto spec = LoadSpecFile(file);
    REQUIRE(spec.ok());
  }
}

TEST_CASE("every example in configs/ loads as shipped", "[spec]") {
  const std::string dir = testing::Runfile("configs");
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path().string());
    auto spec = LoadSpecFile(entry.path().string());
    CHECK(spec.ok());
    ++loaded;
  }
  CHECK(loaded >= 4);
}

TEST_CASE("evaluation needs data.val for language models only", "[spec]") {
  // The mlp family evaluates on held-out rows of its synthetic task.
  CHECK(Load(std::string(kMlp) + "data: {}\n").ok());
  CHECK(Load("model: {family: mlp, n_layer: 1, d_in: 4, d_ff: 4, vocab_size: 2}\n"
             "train: {steps: 10, micro_batch: 1, eval_every: 5}\n")
            .ok());
  const absl::Status gpt = Load(
      "model: {family: gpt2, n_layer: 1, n_head: 1, d_model: 8, vocab_size: 16, max_seq_len: 8}\n"
      "data: {train: t.bin, seq_len: 8}\n"
      "train: {steps: 10, micro_batch: 1, eval_every: 5}\n");
  CHECK(gpt.message().find("data.val: is required when train.eval_every > 0") != std::string::npos);
}

TEST_CASE("every file of the bad corpus is refused with its expected error", "[spec]") {
  const auto files = CorpusFiles("bad");
  REQUIRE(files.size() >= 30);
  for (const std::string& file : files) {
    const std::string text = ReadFile(file);
    const std::string first_line = text.substr(0, text.find('\n'));
    REQUIRE(first_line.rfind("# expect: ", 0) == 0);
    const std::string expected = first_line.substr(10);
    auto spec = LoadSpecFile(file);
    INFO(file << "\n  expected: " << expected << "\n  got: " << spec.status());
    REQUIRE_FALSE(spec.ok());
    REQUIRE(spec.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(spec.status().message().find(expected) != std::string::npos);
    // One clear line, naming the file.
    CHECK(spec.status().message().find('\n') == std::string::npos);
    CHECK(spec.status().message().rfind(file, 0) == 0);
  }
}

TEST_CASE("defaults follow job.proto", "[spec]") {
  LoadOptions options;
  options.base_dir = "/jobs";
  auto spec = LoadSpecYaml(R"(
model: {family: gpt2, n_layer: 2, n_head: 4, d_model: 64, vocab_size: 256, max_seq_len: 32}
data: {train: train.bin}
train: {steps: 5, micro_batch: 2}
resources: {workers: 2}
)",
                           options);
  REQUIRE(spec.ok());
  CHECK(spec->model().d_ff() == 256);
  CHECK(spec->model().n_kv_head() == 4);
  CHECK(spec->model().tie_embeddings());
  CHECK(spec->model().norm_eps() == 1e-5);
  CHECK(spec->data().seq_len() == 32);
  CHECK(spec->data().train() == "/jobs/train.bin");
  CHECK(spec->train().optimizer().name() == "adamw");
  CHECK(spec->train().optimizer().lr() == 3e-4);
  CHECK(spec->train().grad_accum() == 1);
  CHECK(spec->train().precision() == "fp32");
  CHECK(spec->train().seed() == 1234);
  CHECK(spec->train().lr_schedule().name() == "constant");
  CHECK(spec->checkpoint().keep() == 3);
  CHECK(spec->parallel().dp() == 2);
  CHECK(spec->resources().device() == "cpu");
  CHECK(spec->fault().max_restarts() == 3);
  CHECK(spec->fault().heartbeat_timeout_s() == 60);
  CHECK(spec->fault().hang_timeout_s() == 600);
  // Applying the defaults again changes nothing.
  kiln::v1::JobSpec again = *spec;
  ApplyDefaults(&again);
  CHECK(again.SerializeAsString() == spec->SerializeAsString());
}

TEST_CASE("errors carry line and column", "[spec]") {
  const absl::Status s = Load(std::string(kMlp) + "resources:\n  device: tpu\n");
  REQUIRE(s.message() == "job.yaml:4:11: resources.device: \"tpu\" is not one of cpu, cuda");
  // A missing required field points at its enclosing section.
  const absl::Status m = Load(
      "model:\n  family: llama\n  n_layer: 1\n  n_head: 2\n"
      "  d_model: 8\n  vocab_size: 9\n  max_seq_len: 4\n"
      "data: {train: t.bin}\ntrain: {steps: 1, micro_batch: 1}\n");
  REQUIRE(m.message() == "job.yaml:1:1: model.d_ff: is required for family llama");
  // Broken YAML reports where the parser stopped.
  const absl::Status y = Load("model: {family: mlp\ntrain: 1\n");
  REQUIRE(y.message().rfind("job.yaml:", 0) == 0);
  REQUIRE(y.message().find("invalid YAML") != std::string::npos);
}

TEST_CASE("several errors are reported on one line", "[spec]") {
  const absl::Status s = Load(R"(model: {family: mlp, n_layer: 0, d_in: 4, d_ff: 4, vocab_size: 2}
train: {steps: 0, micro_batch: 0, precision: fp8}
resources: {workers: 0}
)");
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("model.n_layer") != std::string::npos);
  CHECK(s.message().find("train.steps") != std::string::npos);
  CHECK(s.message().find("more)") != std::string::npos);
}

TEST_CASE("relative paths need a base directory", "[spec]") {
  LoadOptions options;
  auto spec = LoadSpecYaml(std::string(kMlp) + "checkpoint: {dir: ckpt}\n", options);
  REQUIRE_FALSE(spec.ok());
  CHECK(spec.status().message().find("checkpoint.dir: relative path \"ckpt\"") !=
        std::string::npos);
  options.base_dir = "/a/b";
  spec = LoadSpecYaml(std::string(kMlp) + "checkpoint: {dir: ../ckpt}\n", options);
  REQUIRE(spec.ok());
  CHECK(spec->checkpoint().dir() == "/a/ckpt");
}

TEST_CASE("null values keep defaults and labels load", "[spec]") {
  auto spec = LoadSpecYaml(
      std::string(kMlp) + "fault:\n  max_restarts:\nlabels: {a: b, c: \"1\"}\n", {"x", "/"});
  REQUIRE(spec.ok());
  CHECK(spec->fault().max_restarts() == 3);
  CHECK(spec->labels().at("a") == "b");
  CHECK(spec->labels().at("c") == "1");
}

TEST_CASE("specs that arrive as protos are validated the same way", "[spec]") {
  kiln::v1::JobSpec spec;
  spec.mutable_model()->set_family("gpt2");
  spec.mutable_model()->set_n_layer(1);
  spec.mutable_model()->set_n_head(3);
  spec.mutable_model()->set_d_model(8);
  spec.mutable_model()->set_vocab_size(8);
  spec.mutable_model()->set_max_seq_len(8);
  spec.mutable_data()->set_train(std::string(10000, 'x'));
  spec.mutable_train()->set_steps(1);
  spec.mutable_train()->set_micro_batch(1);
  const absl::Status s = NormalizeSpec(&spec);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("data.train: value is 10000 bytes") != std::string::npos);
  CHECK(s.message().find("model.n_head: must divide model.d_model") != std::string::npos);
}

TEST_CASE("edit distance", "[spec]") {
  CHECK(EditDistance("setps", "steps") == 2);
  CHECK(EditDistance("", "abc") == 3);
  CHECK(EditDistance("kitten", "sitting") == 3);
}

}  // namespace
}  // namespace kiln::spec
