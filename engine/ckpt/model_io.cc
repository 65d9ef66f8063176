// Hugging Face weights and config.json through the parameter table.
#include "engine/ckpt/model_io.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/ckpt/safetensors.h"
#include "nlohmann/json.hpp"

namespace kiln::ckpt {

std::string WeightsPathFor(const std::string& init_from) {
  if (std::filesystem::is_directory(init_from)) {
    return (std::filesystem::path(init_from) / "model.safetensors").string();
  }
  return init_from;
}

namespace {

// The table name a file tensor refers to, or "" when the file name is to be ignored.
std::string CanonicalName(const nn::ParamTable& table, std::string name) {
  for (const std::string& prefix : table.accepted_prefixes) {
    if (absl::StartsWith(name, prefix)) name = name.substr(prefix.size());
  }
  for (const std::string& suffix : table.ignored_suffixes) {
    if (absl::EndsWith(name, suffix)) return "";
  }
  return name;
}

}  // namespace

absl::Status LoadModelWeights(const std::string& path, const nn::ParamTable& table,
                              const std::vector<Tensor>& graph_params) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  std::set<std::string> loaded;
  std::vector<const SafetensorsEntry*> aliased;
  for (const SafetensorsEntry& e : file->entries()) {
    const std::string name = CanonicalName(table, e.name);
    if (name.empty()) continue;
    const nn::ParamEntry* p = table.Find(name);
    if (p == nullptr) {
      bool is_alias = false;
      for (const auto& [alias, target] : table.aliases) is_alias = is_alias || alias == name;
      if (is_alias) {
        aliased.push_back(&e);
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", e.name, " is not a parameter of this model (check the model section "
          "against the checkpoint's config)"));
    }
    if (e.shape != p->shape) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", e.name, " has shape ",
                                                     ShapeToString(e.shape), " but the model expects ",
                                                     ShapeToString(p->shape)));
    }
    if (!IsFloating(e.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", e.name, " is ",
                                                     std::string(DTypeName(e.dtype)),
                                                     ", not a floating dtype"));
    }
    const Tensor src = file->ReadAsF32(e);
    std::memcpy(graph_params[p->graph_param].data<float>() + p->offset, src.raw_data(),
                src.nbytes());
    loaded.insert(name);
  }
  // A tied head stored under its own name (lm_head.weight) fills its target when that is absent.
  for (const SafetensorsEntry* e : aliased) {
    const std::string name = CanonicalName(table, e->name);
    for (const auto& [alias, target] : table.aliases) {
      if (alias != name || loaded.count(target)) continue;
      const nn::ParamEntry* p = table.Find(target);
      if (e->shape != p->shape) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", e->name, " has shape ",
                                                       ShapeToString(e->shape),
                                                       " but the model expects ",
                                                       ShapeToString(p->shape)));
      }
      const Tensor src = file->ReadAsF32(*e);
      std::memcpy(graph_params[p->graph_param].data<float>() + p->offset, src.raw_data(),
                  src.nbytes());
      loaded.insert(target);
    }
  }
  for (const nn::ParamEntry& p : table.entries) {
    if (!loaded.count(p.name)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", p.name, " (shape ",
                                                     ShapeToString(p.shape),
                                                     ") is missing from the file"));
    }
  }
  return absl::OkStatus();
}

absl::Status SaveModelWeights(const std::string& path, const nn::ParamTable& table,
                              const std::vector<Tensor>& graph_params, DType dtype) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const nn::ParamEntry& p : table.entries) {
    Tensor view = Tensor::FromStorage(graph_params[p.graph_param].storage(), p.shape, DType::kF32,
                                      graph_params[p.graph_param].offset() + p.offset);
    tensors.emplace_back(p.name, dtype == DType::kF32 ? view : view.To(dtype));
  }
  return WriteSafetensors(path, tensors, {{"format", "pt"}, {"producer", "kiln"}});
}

absl::StatusOr<nn::ModelConfig> ReadHfConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto get_int = [&](const char* key, int fallback) {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int>() : fallback;
  };
  auto get_float = [&](const char* key, float fallback) {
    return j.contains(key) && j[key].is_number() ? j[key].get<float>() : fallback;
  };
  const std::string type = j.value("model_type", "");
  nn::ModelConfig c;
  if (type == "gpt2") {
    c.family = "gpt2";
    c.n_layer = get_int("n_layer", 12);
    c.n_head = get_int("n_head", 12);
    c.n_kv_head = c.n_head;
    c.d_model = get_int("n_embd", 768);
    c.d_ff = get_int("n_inner", 4 * c.d_model);
    c.vocab_size = get_int("vocab_size", 50257);
    c.max_seq_len = get_int("n_positions", 1024);
    c.norm_eps = get_float("layer_norm_epsilon", 1e-5f);
    c.tie_embeddings = true;
  } else if (type == "llama") {
    c.family = "llama";
    c.n_layer = get_int("num_hidden_layers", 0);
    c.n_head = get_int("num_attention_heads", 0);
    c.n_kv_head = get_int("num_key_value_heads", c.n_head);
    c.d_model = get_int("hidden_size", 0);
    c.d_ff = get_int("intermediate_size", 0);
    c.vocab_size = get_int("vocab_size", 0);
    c.max_seq_len = get_int("max_position_embeddings", 2048);
    c.norm_eps = get_float("rms_norm_eps", 1e-6f);
    c.rope_theta = get_float("rope_theta", 10000.0f);
    c.tie_embeddings = j.value("tie_word_embeddings", false);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": model_type \"", type,
                                                   "\" is not gpt2 or llama"));
  }
  return c;
}

absl::Status WriteHfConfig(const std::string& path, const nn::ModelConfig& c) {
  nlohmann::json j;
  if (c.family == "gpt2") {
    j = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}},
         {"n_layer", c.n_layer}, {"n_head", c.n_head}, {"n_embd", c.d_model},
         {"n_inner", c.d_ff}, {"n_positions", c.max_seq_len}, {"n_ctx", c.max_seq_len},
         {"vocab_size", c.vocab_size}, {"layer_norm_epsilon", c.norm_eps},
         {"activation_function", "gelu_new"}, {"tie_word_embeddings", true}};
  } else if (c.family == "llama") {
    j = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}},
         {"num_hidden_layers", c.n_layer}, {"num_attention_heads", c.n_head},
         {"num_key_value_heads", c.n_kv_head}, {"hidden_size", c.d_model},
         {"intermediate_size", c.d_ff}, {"max_position_embeddings", c.max_seq_len},
         {"vocab_size", c.vocab_size}, {"rms_norm_eps", c.norm_eps},
         {"rope_theta", c.rope_theta}, {"tie_word_embeddings", c.tie_embeddings},
         {"hidden_act", "silu"}};
  } else {
    return absl::InvalidArgumentError("config.json is written for gpt2 and llama only");
  }
  return WriteFileAtomically(path, j.dump(2) + "\n");
}

}  // namespace kiln::ckpt
