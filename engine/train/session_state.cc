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
// model.safetensors: every parameter under its Hugging Face name (f32 master weights). One
// optimizer shard per rank (Note [Sharded checkpoints]). state.json: step counts, the data loader's
// position, the loss scale, the seed, the model's shape (checked on resume) and the flat layout.
// With these, N steps straight and N/2 + resume + N/2 give bit-identical weights.

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
  const Tensor full = Tensor::Zeros({exec_->memory_plan().param_elements}, DType::kF32);
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
  j["format"] = 2;
  j["step"] = step_;
  j["optimizer_steps"] = shard_->applied_steps();
  j["seed"] = seed_;
  j["world_size"] = options_.world_size;
  j["zero_stage"] = stage_;
  j["precision"] = std::string(DTypeName(compute_));
  j["model"] = ModelSignature(config_);
  if (train_loader_ != nullptr) {
    const data::LoaderState& l = train_loader_->state();
    j["loader"] = {{"position", l.position}, {"epoch", l.epoch}, {"window", l.window}};
  }
  j["loss_scale"] = {{"scale", scaler_.state().scale},
                     {"clean_steps", scaler_.state().clean_steps}};
  j["job"] = spec_.name();
  // Where every tensor sits in the flat buffers, so optimizer shards reshard onto any layout.
  const graph::MemoryPlan& plan = exec_->memory_plan();
  nlohmann::json layout = nlohmann::json::object();
  for (const nn::ParamEntry& e : params_.entries) {
    layout[e.name] = {plan.param_offset[e.graph_param] + e.offset, e.numel()};
  }
  j["layout"] = layout;
  j["flat_elements"] = plan.param_elements;
  return j.dump(2) + "\n";
}

namespace {

std::string ShardFileName(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof(name), "optimizer-%05d-of-%05d.safetensors", rank, world);
  return name;
}

}  // namespace

// Note [Sharded checkpoints]
// Every rank writes optimizer-RRRRR-of-WWWWW.safetensors holding, for each flat range it owns,
// "<state>@<flat offset>" tensors; rank 0 writes model.safetensors (the full f32 weights under
// Hugging Face names, gathered from every rank's master) and state.json (with each tensor's flat
// offset). One rank creates the temporary directory and commits it after every rank reported
// success, so a checkpoint is complete or absent. Loading rebuilds each state array in the saved
// flat layout from all shard files, moves every tensor to its offset in the new layout, and keeps
// the ranges this rank owns: any world size, any ZeRO stage.
absl::Status TrainingSession::WriteOptimizerShard(const std::string& dir) const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (int r = 0; r < shard_->num_ranges(); ++r) {
    const int64_t begin = shard_->range(r).first;
    for (const auto& [name, t] : const_cast<OptimizerShard&>(*shard_).State(r)) {
      Tensor host = t;  // the writer reads host memory: device state is copied out first
      if (!t.device().is_cpu()) {
        host = Tensor::Zeros(t.sizes(), t.dtype());
        host.CopyFrom(t);
      }
      tensors.emplace_back(absl::StrCat(name, "@", begin), host);
    }
  }
  return ckpt::WriteSafetensors(
      (std::filesystem::path(dir) / ShardFileName(options_.rank, options_.world_size)).string(),
      tensors);
}

absl::StatusOr<std::string> TrainingSession::SaveCheckpoint() {
  KILN_ASSIGN_OR_RETURN(const Tensor full, FullWeights());  // a collective under ZeRO
  const std::string& run_dir = spec_.checkpoint().dir();
  const int keep = spec_.checkpoint().has_keep() ? spec_.checkpoint().keep() : 3;
  // Rank 0 prepares the directory; everyone writes; everyone learns whether anyone failed.
  auto agree = [&](absl::Status s) -> absl::Status {
    if (!distributed_ || options_.world_size == 1) return s;
    const Tensor flag = Tensor::FromVector(std::vector<int32_t>{s.ok() ? 0 : 1}, {1});
    KILN_RETURN_IF_ERROR(zero_->AllReduceMax(flag));
    if (s.ok() && flag.data<int32_t>()[0] != 0) {
      return absl::AbortedError(absl::StrCat("checkpoint for step ", step_,
                                             " failed on another rank"));
    }
    return s;
  };
  absl::Status begun = absl::OkStatus();
  if (rank0()) begun = ckpt::BeginCheckpoint(run_dir, step_).status();
  KILN_RETURN_IF_ERROR(agree(begun));
  const std::string tmp = ckpt::CheckpointTempDir(run_dir, step_);
  absl::Status written = WriteOptimizerShard(tmp);
  if (written.ok() && rank0()) {
    std::vector<std::pair<std::string, Tensor>> model;
    const std::vector<Tensor> params = ParamViews(full);
    for (const nn::ParamEntry& e : params_.entries) {
      const Tensor& gp = params[e.graph_param];
      model.emplace_back(e.name, Tensor::FromStorage(gp.storage(), e.shape, DType::kF32,
                                                     gp.offset() + e.offset));
    }
    written = ckpt::WriteSafetensors((std::filesystem::path(tmp) / "model.safetensors").string(),
                                     model);
  }
  if (!written.ok()) {
    written = absl::Status(written.code(), absl::StrCat("writing checkpoint ", run_dir, "/",
                                                        ckpt::CheckpointDirName(step_), ": ",
                                                        written.message()));
  }
  KILN_RETURN_IF_ERROR(agree(written));
  absl::StatusOr<std::string> committed = ckpt::CheckpointDirName(step_);
  if (rank0()) committed = ckpt::FinishCheckpoint(run_dir, step_, StateJson(), keep);
  KILN_RETURN_IF_ERROR(agree(committed.status()));
  return (std::filesystem::path(run_dir) / ckpt::CheckpointDirName(step_)).string();
}

absl::Status TrainingSession::ReadOptimizerShards(const std::string& dir,
                                                  const std::string& state_json) {
  const nlohmann::json j = nlohmann::json::parse(state_json, nullptr, false);
  const int old_world = j.value("world_size", 1);
  const int64_t old_elements = j.value("flat_elements", int64_t{0});
  const nlohmann::json& layout = j["layout"];
  std::vector<std::unique_ptr<ckpt::SafetensorsFile>> files;
  for (int r = 0; r < old_world; ++r) {
    KILN_ASSIGN_OR_RETURN(auto f, ckpt::SafetensorsFile::Open(
                                      (std::filesystem::path(dir) / ShardFileName(r, old_world))
                                          .string()));
    files.push_back(std::move(f));
  }
  const graph::MemoryPlan& plan = exec_->memory_plan();
  for (const auto& [state_name, unused] : shard_->State(0)) {
    // The state array in the saved flat layout, then in this run's.
    const Tensor old_full = Tensor::Zeros({std::max<int64_t>(old_elements, 1)}, DType::kF32);
    for (const auto& f : files) {
      for (const ckpt::SafetensorsEntry& e : f->entries()) {
        const size_t at = e.name.find('@');
        if (at == std::string::npos || e.name.substr(0, at) != state_name) continue;
        const int64_t begin = std::stoll(e.name.substr(at + 1));
        const int64_t n = NumElements(e.shape);
        if (e.dtype != DType::kF32 || begin < 0 || begin + n > old_elements) {
          return absl::InvalidArgumentError(absl::StrCat(f->path(), ": ", e.name,
                                                         " does not fit the saved layout"));
        }
        std::memcpy(old_full.data<float>() + begin, e.data, e.bytes);
      }
    }
    const Tensor new_full = Tensor::Zeros({plan.param_elements}, DType::kF32);
    for (const nn::ParamEntry& e : params_.entries) {
      if (!layout.contains(e.name)) {
        return absl::InvalidArgumentError(absl::StrCat(dir, "/state.json has no layout for ",
                                                       e.name));
      }
      const int64_t from = layout[e.name][0].get<int64_t>();
      const int64_t to = plan.param_offset[e.graph_param] + e.offset;
      std::memcpy(new_full.data<float>() + to, old_full.data<float>() + from,
                  static_cast<size_t>(e.numel()) * 4);
    }
    for (int r = 0; r < shard_->num_ranges(); ++r) {
      for (const auto& [name, t] : shard_->State(r)) {
        if (name != state_name) continue;
        t.CopyFrom(new_full.Slice(0, shard_->range(r).first, shard_->range(r).second));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status TrainingSession::Resume(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(const std::string dir, ckpt::ResolveCheckpoint(path));
  KILN_ASSIGN_OR_RETURN(const std::string text, ckpt::ReadCheckpointState(dir));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", 0) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/state.json is not a Kiln checkpoint"));
  }
  if (j["model"] != ModelSignature(config_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", dir, " holds a different model: ", j["model"].dump(), " vs ",
        ModelSignature(config_).dump()));
  }
  const Tensor full = Tensor::Zeros({exec_->memory_plan().param_elements}, DType::kF32);
  KILN_RETURN_IF_ERROR(ckpt::LoadModelWeights(
      (std::filesystem::path(dir) / "model.safetensors").string(), params_, ParamViews(full)));
  shard_->SetWeights(full);
  KILN_RETURN_IF_ERROR(ReadOptimizerShards(dir, text));
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
  KILN_ASSIGN_OR_RETURN(const Tensor full, FullWeights());  // a collective under ZeRO
  if (!rank0()) return absl::OkStatus();
  KILN_RETURN_IF_ERROR(ckpt::SaveModelWeights(path, params_, ParamViews(full)));
  if (config_.family != "mlp") {
    KILN_RETURN_IF_ERROR(ckpt::WriteHfConfig((parent / "config.json").string(), config_));
  }
  return absl::OkStatus();
}

}  // namespace kiln::train
