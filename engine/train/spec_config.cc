// JobSpec -> engine configuration.
#include "engine/train/spec_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/ckpt/model_io.h"

namespace kiln::train {

namespace {

// A model field set both in the spec and in config.json must agree.
absl::Status Agree(const char* field, int64_t spec_value, int64_t file_value,
                   const std::string& file) {
  if (spec_value == 0 || spec_value == file_value) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("model.", field, ": ", spec_value,
                                                 " disagrees with ", file, " (", file_value, ")"));
}

}  // namespace

absl::StatusOr<nn::ModelConfig> ModelConfigFromSpec(const kiln::v1::ModelSpec& m,
                                                    const std::string& init_from) {
  nn::ModelConfig c;
  c.family = m.family();
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_kv_head = m.has_n_kv_head() ? m.n_kv_head() : m.n_head();
  c.d_model = m.d_model();
  c.d_ff = m.has_d_ff() ? m.d_ff() : 4 * m.d_model();
  c.vocab_size = m.vocab_size();
  c.max_seq_len = m.max_seq_len();
  c.norm_eps = static_cast<float>(m.has_norm_eps() ? m.norm_eps() : 1e-5);
  c.rope_theta = static_cast<float>(m.has_rope_theta() ? m.rope_theta() : 10000.0);
  c.tie_embeddings = m.family() == "gpt2" || (m.has_tie_embeddings() && m.tie_embeddings());
  c.d_in = m.has_d_in() ? m.d_in() : 16;
  c.dropout = static_cast<float>(m.has_dropout() ? m.dropout() : 0.0);
  const std::filesystem::path config_json = std::filesystem::path(init_from) / "config.json";
  if (!init_from.empty() && std::filesystem::is_directory(init_from) &&
      std::filesystem::exists(config_json)) {
    KILN_ASSIGN_OR_RETURN(nn::ModelConfig f, ckpt::ReadHfConfig(config_json.string()));
    const std::string file = config_json.string();
    if (!c.family.empty() && c.family != f.family) {
      return absl::InvalidArgumentError(absl::StrCat("model.family: \"", c.family,
                                                     "\" disagrees with ", file, " (\"", f.family,
                                                     "\")"));
    }
    KILN_RETURN_IF_ERROR(Agree("n_layer", m.n_layer(), f.n_layer, file));
    KILN_RETURN_IF_ERROR(Agree("n_head", m.n_head(), f.n_head, file));
    KILN_RETURN_IF_ERROR(Agree("d_model", m.d_model(), f.d_model, file));
    KILN_RETURN_IF_ERROR(Agree("vocab_size", m.vocab_size(), f.vocab_size, file));
    if (m.has_n_kv_head()) KILN_RETURN_IF_ERROR(Agree("n_kv_head", m.n_kv_head(), f.n_kv_head, file));
    if (m.has_d_ff()) KILN_RETURN_IF_ERROR(Agree("d_ff", m.d_ff(), f.d_ff, file));
    f.dropout = c.dropout;
    f.d_in = c.d_in;
    if (m.max_seq_len() > 0) f.max_seq_len = std::min(f.max_seq_len, m.max_seq_len());
    c = f;
  }
  KILN_RETURN_IF_ERROR(nn::ValidateModelConfig(c));
  return c;
}

absl::StatusOr<DType> ComputeDTypeFromSpec(const kiln::v1::TrainSpec& t) {
  const std::string p = t.has_precision() ? t.precision() : "fp32";
  if (p == "fp32") return DType::kF32;
  if (p == "bf16") return DType::kBF16;
  if (p == "fp16") return DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("train.precision: \"", p, "\" is not one of fp32, bf16, fp16"));
}

optim::OptimizerConfig OptimizerConfigFromSpec(const kiln::v1::TrainSpec& t) {
  const auto& o = t.optimizer();
  optim::OptimizerConfig c;
  c.name = o.has_name() ? o.name() : "adamw";
  c.lr = static_cast<float>(o.has_lr() ? o.lr() : 3e-4);
  c.beta1 = static_cast<float>(o.has_beta1() ? o.beta1() : 0.9);
  c.beta2 = static_cast<float>(o.has_beta2() ? o.beta2() : 0.999);
  c.eps = static_cast<float>(o.has_eps() ? o.eps() : 1e-8);
  c.weight_decay = static_cast<float>(o.has_weight_decay() ? o.weight_decay() : 0.0);
  c.momentum = static_cast<float>(o.has_momentum() ? o.momentum() : 0.0);
  return c;
}

optim::ScheduleConfig ScheduleFromSpec(const kiln::v1::TrainSpec& t, int64_t total_steps) {
  optim::ScheduleConfig s;
  s.name = t.lr_schedule().has_name() ? t.lr_schedule().name() : "constant";
  s.warmup_steps = t.lr_schedule().warmup_steps();
  s.lr = t.optimizer().has_lr() ? t.optimizer().lr() : 3e-4;
  s.min_lr = t.lr_schedule().min_lr();
  s.total_steps = total_steps;
  return s;
}

}  // namespace kiln::train
