// Parity with PyTorch (tests/golden/torch_reference.py, run with Debian's /usr/bin/python3): the same
// GPT-2 and Llama (GQA, head dim 24, vocabulary 250, T = 20) from the same initial weights give
//   f32:  initial logits and every gradient within 1e-4 relative L2, every step's loss within 1e-4
//         relative, final weights (20 AdamW steps with clipping and a cosine schedule) within 1e-3;
//   bf16: every step's loss within 2e-2 relative (PyTorch: autocast).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/ckpt/safetensors.h"
#include "engine/graph/executor.h"
#include "engine/train/session.h"
#include "nlohmann/json.hpp"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

struct Fixture {
  std::string dir;
  std::string family;
  int n_head = 3, n_kv_head = 3, d_model = 72, d_ff = 288;
};

// Runs the reference; fails the test (not skips) when torch is missing.
void RunReference(const Fixture& f, const std::string& precision) {
  REQUIRE(std::filesystem::exists("/usr/bin/python3"));
  const std::string script = Runfile("tests/golden/torch_reference.py");
  std::ostringstream cmd;
  cmd << "/usr/bin/python3 " << script << " " << f.dir << " --family " << f.family
      << " --precision " << precision << " --n_head " << f.n_head << " --n_kv_head "
      << f.n_kv_head << " --d_model " << f.d_model << " --d_ff " << f.d_ff << " 2>&1";
  const int rc = std::system(cmd.str().c_str());
  INFO("reference command: " << cmd.str()
                             << " (needs Debian's python3-torch; tools/setup.sh installs it)");
  REQUIRE(rc == 0);
}

kiln::v1::JobSpec MakeSpec(const Fixture& f, const std::string& precision) {
  kiln::v1::JobSpec s;
  s.set_name("parity-" + f.family);
  auto* m = s.mutable_model();
  m->set_family(f.family);
  m->set_n_layer(2);
  m->set_n_head(f.n_head);
  m->set_n_kv_head(f.n_kv_head);
  m->set_d_model(f.d_model);
  m->set_d_ff(f.d_ff);
  m->set_vocab_size(250);
  m->set_max_seq_len(32);
  m->set_norm_eps(1e-5);
  m->set_tie_embeddings(f.family == "gpt2");
  m->set_init_from(f.dir + "/init.safetensors");
  s.mutable_data()->set_train(f.dir + "/train.bin");
  s.mutable_data()->set_seq_len(20);
  auto* t = s.mutable_train();
  t->set_steps(20);
  t->set_micro_batch(3);
  t->set_precision(precision);
  t->set_grad_clip(1.0);
  auto* o = t->mutable_optimizer();
  o->set_name("adamw");
  o->set_lr(3e-3);
  o->set_beta1(0.9);
  o->set_beta2(0.95);
  o->set_eps(1e-8);
  o->set_weight_decay(0.1);
  t->mutable_lr_schedule()->set_name("cosine");
  t->mutable_lr_schedule()->set_warmup_steps(3);
  t->mutable_lr_schedule()->set_min_lr(1e-4);
  return s;
}

std::vector<float> ReadF32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

std::vector<double> ReadLosses(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json j;
  in >> j;
  return j.get<std::vector<double>>();
}

// Every table entry of `session`'s parameters (or of `flat`, laid out like them) by name.
std::vector<float> EntryValues(const train::TrainingSession& session, const Tensor& flat_base,
                               const nn::ParamEntry& e) {
  const graph::MemoryPlan& plan = const_cast<train::TrainingSession&>(session).executor().memory_plan();
  const float* base = flat_base.data<float>() + plan.param_offset[e.graph_param] + e.offset;
  return std::vector<float>(base, base + e.numel());
}

void CheckF32(const Fixture& f) {
  RunReference(f, "fp32");
  auto session = train::TrainingSession::Create(MakeSpec(f, "fp32"), {});
  INFO(session.status());
  REQUIRE(session.ok());
  train::TrainingSession& s = **session;
  REQUIRE(s.InitializeWeights().ok());
  graph::Executor& exec = s.executor();

  // Batch 0 by hand: tokens [0, B*T] of the file.
  std::vector<int32_t> tokens(3 * 20 + 1);
  {
    auto file = data::TokenFile::Open(f.dir + "/train.bin", 250);
    REQUIRE(file.ok());
    (*file)->Read(0, static_cast<int64_t>(tokens.size()), tokens.data());
  }
  // Initial logits through a forward graph sharing the session's weights.
  {
    nn::GraphOptions go;
    go.batch = 3;
    go.seq_len = 20;
    go.backward = false;
    go.logits_output = true;
    auto model = nn::BuildModel(s.model_config(), go);
    REQUIRE(model.ok());
    const graph::ValueId in = model->inputs, tg = model->targets, logits = model->logits;
    graph::ExecutorOptions eo;
    eo.shared_params = exec.params_storage();
    auto fwd = graph::Executor::Create(std::move(model->graph), eo);
    REQUIRE(fwd.ok());
    std::copy(tokens.begin(), tokens.end() - 1, (*fwd)->value(in).data<int32_t>());
    std::copy(tokens.begin() + 1, tokens.end(), (*fwd)->value(tg).data<int32_t>());
    (*fwd)->Run();
    INFO("initial logits");
    KILN_REQUIRE_CLOSE((*fwd)->value(logits).ToFloats(), ReadF32(f.dir + "/logits0.f32"), 1e-4);
  }
  // Every gradient of batch 0.
  {
    const graph::Graph& g = exec.graph();
    graph::ValueId tok = graph::kNoValue, tgt = graph::kNoValue, seed = graph::kNoValue;
    for (graph::ValueId v : g.inputs()) {
      if (g.value(v).name == "tokens") tok = v;
      if (g.value(v).name == "targets") tgt = v;
      if (g.value(v).name == "loss_seed") seed = v;
    }
    std::copy(tokens.begin(), tokens.end() - 1, exec.value(tok).data<int32_t>());
    std::copy(tokens.begin() + 1, tokens.end(), exec.value(tgt).data<int32_t>());
    exec.value(seed).Fill(1.0f);
    exec.ZeroGrads();
    exec.Run();
    auto grads = ckpt::SafetensorsFile::Open(f.dir + "/grads0.safetensors");
    REQUIRE(grads.ok());
    for (const nn::ParamEntry& e : s.param_table().entries) {
      const ckpt::SafetensorsEntry* ref = (*grads)->Find(e.name);
      REQUIRE(ref != nullptr);
      INFO("gradient of " << e.name);
      KILN_REQUIRE_CLOSE(EntryValues(s, exec.flat_grads(), e),
                         (*grads)->ReadAsF32(*ref).ToFloats(), 1e-4);
    }
  }
  // 20 training steps.
  const std::vector<double> ref_losses = ReadLosses(f.dir + "/losses.json");
  REQUIRE(ref_losses.size() == 20);
  for (int step = 0; step < 20; ++step) {
    auto m = s.Step();
    REQUIRE(m.ok());
    INFO("step " << step + 1 << ": kiln " << m->loss << " torch " << ref_losses[step]);
    REQUIRE(std::fabs(m->loss - ref_losses[step]) <= 1e-4 * std::fabs(ref_losses[step]));
  }
  auto final_ref = ckpt::SafetensorsFile::Open(f.dir + "/final.safetensors");
  REQUIRE(final_ref.ok());
  for (const nn::ParamEntry& e : s.param_table().entries) {
    INFO("final weight " << e.name);
    KILN_REQUIRE_CLOSE(EntryValues(s, exec.flat_params(), e),
                       (*final_ref)->ReadAsF32(*(*final_ref)->Find(e.name)).ToFloats(), 1e-3);
  }
}

void CheckBf16(const Fixture& f) {
  RunReference(f, "bf16");
  auto session = train::TrainingSession::Create(MakeSpec(f, "bf16"), {});
  INFO(session.status());
  REQUIRE(session.ok());
  REQUIRE((*session)->InitializeWeights().ok());
  const std::vector<double> ref = ReadLosses(f.dir + "/losses.json");
  for (int step = 0; step < 20; ++step) {
    auto m = (*session)->Step();
    REQUIRE(m.ok());
    INFO("bf16 step " << step + 1 << ": kiln " << m->loss << " torch " << ref[step]);
    REQUIRE(std::fabs(m->loss - ref[step]) <= 2e-2 * std::fabs(ref[step]));
  }
}

TEST_CASE("GPT-2 matches PyTorch in f32: logits, gradients, 20 steps, final weights", "[golden]") {
  CheckF32({TempDir("gpt2-f32"), "gpt2"});
}

TEST_CASE("Llama with grouped-query attention matches PyTorch in f32", "[golden]") {
  CheckF32({TempDir("llama-f32"), "llama", 6, 2, 144, 200});
}

TEST_CASE("GPT-2 bf16 losses match PyTorch autocast within 2e-2", "[golden]") {
  CheckBf16({TempDir("gpt2-bf16"), "gpt2"});
}

TEST_CASE("Llama bf16 losses match PyTorch autocast within 2e-2", "[golden]") {
  CheckBf16({TempDir("llama-bf16"), "llama", 6, 2, 144, 200});
}

}  // namespace
}  // namespace kiln::testing
