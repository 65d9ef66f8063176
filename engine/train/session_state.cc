// TrainingSession state: weight initialization, checkpoints (save and exact resume) and the final
// Hugging Face export. See Note [What a checkpoint holds].
#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/ckpt/checkpoint.h"
#include "engine/ckpt/model_io.h"
#include "engine/ckpt/safetensors.h"
#include "engine/core/rng.h"
#include "engine/train/session.h"
#include "nlohmann/json.hpp"

namespace kiln::train {

// Note [What a checkpoint holds]
// model.safetensors: every parameter under its Hugging Face name (f32). optimizer.safetensors: each
// optimizer state tensor sliced per parameter, named "<state>/<hf name>", so the file does not
// depend on the flat-buffer layout (and can be resharded). state.json: step counts, the data
// loader's position, the loss scale, the seed and the model's shape (checked on resume). With
// these, N steps straight and N/2 + resume + N/2 give bit-identical weights.

namespace {

// FNV-1a, to derive a per-tensor initialization stream from its name.
uint64_t HashName(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

nlohmann::json ModelSignature(const nn::ModelConfig& c) {
  return {{"family", c.family},       {"n_layer", c.n_layer},     {"n_head", c.n_head},
          {"n_kv_head", c.n_kv_head}, {"d_model", c.d_model},     {"d_ff", c.d_ff},
          {"vocab_size", c.vocab_size}, {"max_seq_len", c.max_seq_len},
          {"tie_embeddings", c.tie_embeddings}, {"d_in", c.d_in}};
}

}  // namespace

absl::Status TrainingSession::InitializeWeights() {
  const std::string init_from =
      !options_.init_from.empty() ? options_.init_from : spec_.model().init_from();
  const Tensor full = Tensor::Zeros({exec_->flat_params().numel()}, DType::kF32);
  const std::vector<Tensor> params = ParamViews(full);
  if (!init_from.empty()) {
    KILN_RETURN_IF_ERROR(
        ckpt::LoadModelWeights(ckpt::WeightsPathFor(init_from), params_, params));
    shard_->SetWeights(full);
    return absl::OkStatus();
  }
  for (const nn::ParamEntry& e : params_.entries) {
    float* dst = params[e.graph_param].data<float>() + e.offset;
    const int64_t n = e.numel();
    if (e.init.kind != nn::ParamInit::kNormal) {
      std::fill(dst, dst + n, e.init.kind == nn::ParamInit::kOnes ? 1.0f : 0.0f);
      continue;
    }
    const uint64_t key = seed_ ^ HashName(e.name);
    for (int64_t i = 0; i < n; i += 4) {  // Box-Muller, two pairs per Philox draw
      uint32_t w[4];
      Philox::Generate(key, static_cast<uint64_t>(i / 4), w);
      for (int k = 0; k < 2; ++k) {
        const float u1 = std::max(Philox::ToUniform(w[2 * k]), 1e-7f);
        const float u2 = Philox::ToUniform(w[2 * k + 1]);
        const float r = std::sqrt(-2.0f * std::log(u1)) * e.init.std;
        if (i + 2 * k < n) dst[i + 2 * k] = r * std::cos(6.2831853f * u2);
        if (i + 2 * k + 1 < n) dst[i + 2 * k + 1] = r * std::sin(6.2831853f * u2);
      }
    }
  }
  shard_->SetWeights(full);
  return absl::OkStatus();
}

std::string TrainingSession::StateJson() const {
  nlohmann::json j;
  j["format"] = 1;
  j["step"] = step_;
  j["optimizer_steps"] = shard_->applied_steps();
  j["seed"] = seed_;
  j["world_size"] = options_.world_size;
  j["precision"] = std::string(DTypeName(compute_));
  j["model"] = ModelSignature(config_);
  if (train_loader_ != nullptr) {
    const data::LoaderState& l = train_loader_->state();
    j["loader"] = {{"position", l.position}, {"epoch", l.epoch}, {"window", l.window}};
  }
  j["loss_scale"] = {{"scale", scaler_.state().scale},
                     {"clean_steps", scaler_.state().clean_steps}};
  j["job"] = spec_.name();
  return j.dump(2) + "\n";
}

absl::StatusOr<std::string> TrainingSession::SaveCheckpoint() {
  const std::vector<Tensor> params = ParamViews(FullWeights());
  const graph::MemoryPlan& plan = exec_->memory_plan();
  ckpt::CheckpointFiles files;
  auto& model = files.safetensors["model.safetensors"];
  auto& optimizer = files.safetensors["optimizer.safetensors"];
  const auto state = shard_->optimizer().State();
  for (const nn::ParamEntry& e : params_.entries) {
    const Tensor& gp = params[e.graph_param];
    model.emplace_back(e.name, Tensor::FromStorage(gp.storage(), e.shape, DType::kF32,
                                                   gp.offset() + e.offset));
    const int64_t index = shard_->StateIndex(plan.param_offset[e.graph_param] + e.offset);
    KILN_CHECK_GE(index, 0) << e.name;
    for (const auto& [state_name, tensor] : state) {
      optimizer.emplace_back(state_name + "/" + e.name,
                             Tensor::FromStorage(tensor.storage(), e.shape, DType::kF32,
                                                 tensor.offset() + index));
    }
  }
  files.state_json = StateJson();
  const int keep = spec_.checkpoint().has_keep() ? spec_.checkpoint().keep() : 3;
  return ckpt::CommitCheckpoint(spec_.checkpoint().dir(), step_, files, keep);
}

absl::Status TrainingSession::Resume(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(const std::string dir, ckpt::ResolveCheckpoint(path));
  KILN_ASSIGN_OR_RETURN(const std::string text, ckpt::ReadCheckpointState(dir));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", 0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/state.json is not a Kiln checkpoint"));
  }
  if (j["model"] != ModelSignature(config_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", dir, " holds a different model: ", j["model"].dump(), " vs ",
        ModelSignature(config_).dump()));
  }
  const Tensor full = Tensor::Zeros({exec_->flat_params().numel()}, DType::kF32);
  KILN_RETURN_IF_ERROR(ckpt::LoadModelWeights(
      (std::filesystem::path(dir) / "model.safetensors").string(), params_, ParamViews(full)));
  shard_->SetWeights(full);
  KILN_ASSIGN_OR_RETURN(auto opt_file, ckpt::SafetensorsFile::Open(
                                           (std::filesystem::path(dir) / "optimizer.safetensors")
                                               .string()));
  const graph::MemoryPlan& plan = exec_->memory_plan();
  for (const auto& [state_name, tensor] : shard_->optimizer().State()) {
    for (const nn::ParamEntry& e : params_.entries) {
      const std::string name = state_name + "/" + e.name;
      const ckpt::SafetensorsEntry* entry = opt_file->Find(name);
      if (entry == nullptr || entry->shape != e.shape || entry->dtype != DType::kF32) {
        return absl::InvalidArgumentError(absl::StrCat(dir, "/optimizer.safetensors: ", name,
                                                       " is missing or has the wrong shape"));
      }
      const int64_t index = shard_->StateIndex(plan.param_offset[e.graph_param] + e.offset);
      std::memcpy(tensor.data<float>() + index, entry->data, entry->bytes);
    }
  }
  step_ = j.value("step", int64_t{0});
  shard_->set_applied_steps(j.value("optimizer_steps", int64_t{0}));
  if (train_loader_ != nullptr && j.contains("loader")) {
    data::LoaderState l;
    l.position = j["loader"].value("position", int64_t{0});
    l.epoch = j["loader"].value("epoch", int64_t{0});
    l.window = j["loader"].value("window", int64_t{0});
    train_loader_->set_state(l);
  }
  optim::LossScalerState ls;
  ls.scale = j["loss_scale"].value("scale", 65536.0);
  ls.clean_steps = j["loss_scale"].value("clean_steps", int64_t{0});
  if (scaler_.enabled()) scaler_.set_state(ls);
  return absl::OkStatus();
}

absl::Status TrainingSession::SaveFinal(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  KILN_RETURN_IF_ERROR(ckpt::SaveModelWeights(path, params_, ParamViews(FullWeights())));
  if (config_.family != "mlp") {
    KILN_RETURN_IF_ERROR(ckpt::WriteHfConfig((parent / "config.json").string(), config_));
  }
  return absl::OkStatus();
}

}  // namespace kiln::train
