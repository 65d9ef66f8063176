// Exact resume: a run of N steps straight and a run stopped at N/2, checkpointed and resumed to N
// end with bit-identical weights and optimizer state — with dropout, shuffled data, gradient
// accumulation and a warm-up + cosine schedule all in play.
#include <filesystem>
#include <fstream>

#include "engine/ckpt/safetensors.h"
#include "engine/data/token_file.h"
#include "engine/train/trainer.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

kiln::v1::JobSpec TinySpec(const std::string& dir, const std::string& run, const std::string& precision) {
  kiln::v1::JobSpec s;
  s.set_name("resume");
  auto* m = s.mutable_model();
  m->set_family("gpt2");
  m->set_n_layer(2);
  m->set_n_head(2);
  m->set_d_model(32);
  m->set_vocab_size(64);
  m->set_max_seq_len(16);
  m->set_dropout(0.1);
  s.mutable_data()->set_train(dir + "/train.bin");
  s.mutable_data()->set_seq_len(16);
  s.mutable_data()->set_shuffle(true);
  auto* t = s.mutable_train();
  t->set_steps(12);
  t->set_micro_batch(2);
  t->set_grad_accum(2);
  t->set_precision(precision);
  t->set_grad_clip(0.5);
  t->mutable_optimizer()->set_lr(3e-3);
  t->mutable_optimizer()->set_weight_decay(0.1);
  t->mutable_lr_schedule()->set_name("cosine");
  t->mutable_lr_schedule()->set_warmup_steps(3);
  t->mutable_lr_schedule()->set_min_lr(1e-4);
  s.mutable_checkpoint()->set_dir(dir + "/" + run);
  s.mutable_checkpoint()->set_every_steps(3);
  s.mutable_checkpoint()->set_keep(2);
  return s;
}

void WriteData(const std::string& dir) {
  std::vector<uint32_t> tokens;
  uint32_t x = 12345;
  for (int i = 0; i < 5000; ++i) {
    x = x * 1103515245u + 12345u;
    tokens.push_back((x >> 16) % 64);
  }
  REQUIRE(data::WriteTokenFile(dir + "/train.bin", tokens).ok());
}

class StopAt : public train::TrainObserver {
 public:
  explicit StopAt(int64_t step) : stop_(step) {}
  void OnStep(const train::StepMetrics& m) override { last_ = m.step; }
  bool ShouldStop() override { return last_ >= stop_; }

 private:
  int64_t stop_, last_ = 0;
};

std::vector<std::vector<float>> ReadAll(const std::string& path) {
  auto f = ckpt::SafetensorsFile::Open(path);
  REQUIRE(f.ok());
  std::vector<std::vector<float>> out;
  for (const auto& e : (*f)->entries()) out.push_back((*f)->ReadAsF32(e).ToFloats());
  REQUIRE(!out.empty());
  return out;
}

void CheckExactResume(const std::string& precision) {
  const std::string dir = TempDir("resume-" + precision);
  WriteData(dir);
  REQUIRE(train::RunTraining(TinySpec(dir, "straight", precision), {}, nullptr).ok());

  StopAt stop(6);
  const absl::Status stopped = train::RunTraining(TinySpec(dir, "split", precision), {}, &stop);
  REQUIRE(absl::IsCancelled(stopped));
  REQUIRE(std::filesystem::exists(dir + "/split/step-00000006/state.json"));
  train::TrainOptions resume;
  resume.resume_dir = dir + "/split";
  const absl::Status resumed = train::RunTraining(TinySpec(dir, "split", precision), resume, nullptr);
  INFO(resumed);
  REQUIRE(resumed.ok());
  for (const char* file : {"model.safetensors", "optimizer-00000-of-00001.safetensors"}) {
    INFO(file);
    const auto a = ReadAll(dir + "/straight/step-00000012/" + file);
    const auto b = ReadAll(dir + "/split/step-00000012/" + file);
    REQUIRE(a == b);  // bit-identical
  }
  // keep: 2 leaves the two newest checkpoints.
  int kept = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/straight")) {
    kept += e.path().filename().string().rfind("step-", 0) == 0;
  }
  REQUIRE(kept == 2);
}

TEST_CASE("12 steps straight equal 6 + resume + 6, bit for bit (f32)", "[resume]") {
  CheckExactResume("fp32");
}

TEST_CASE("12 steps straight equal 6 + resume + 6, bit for bit (bf16)", "[resume]") {
  CheckExactResume("bf16");
}

}  // namespace
}  // namespace kiln::testing
