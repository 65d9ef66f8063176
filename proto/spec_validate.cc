// Semantic validation of a JobSpec (defaults applied). One small checker per section; each appends
// issues with the field path so that kilnd, the CLI and kiln-train refuse a bad spec the same way.
#include "proto/spec_validate.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/message.h"
#include "proto/spec_defaults.h"

namespace kiln::spec {
namespace {

using Issues = std::vector<SpecIssue>;

void Add(Issues* issues, std::string path, std::string message) {
  issues->push_back({std::move(path), std::move(message)});
}

template <typename T>
void Range(Issues* issues, const std::string& path, T value, T lo, T hi) {
  if (value < lo || value > hi) {
    Add(issues, path, absl::StrCat(value, " is out of range [", lo, ", ", hi, "]"));
  }
}

void AtLeast(Issues* issues, const std::string& path, int64_t value, int64_t lo) {
  if (value < lo) Add(issues, path, absl::StrCat("must be at least ", lo, ", got ", value));
}

void Positive(Issues* issues, const std::string& path, double value) {
  if (!(value > 0) || !std::isfinite(value)) {
    Add(issues, path, absl::StrCat("must be a positive number, got ", value));
  }
}

void OneOf(Issues* issues, const std::string& path, const std::string& value,
           const std::vector<std::string>& allowed) {
  for (const std::string& a : allowed) {
    if (value == a) return;
  }
  Add(issues, path, absl::StrCat("\"", value, "\" is not one of ", absl::StrJoin(allowed, ", ")));
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

void CheckModel(const kiln::v1::ModelSpec& m, Issues* issues) {
  if (m.family().empty()) {
    Add(issues, "model.family", "is required (one of gpt2, llama, mlp)");
    return;
  }
  OneOf(issues, "model.family", m.family(), {"gpt2", "llama", "mlp"});
  Range(issues, "model.n_layer", m.n_layer(), 1, 1024);
  Range(issues, "model.vocab_size", m.vocab_size(), 1, 10'000'000);
  Range(issues, "model.dropout", m.dropout(), 0.0, 0.99);
  if (m.family() == "mlp") {
    if (!m.has_d_in()) Add(issues, "model.d_in", "is required for family mlp");
    if (!m.has_d_ff()) Add(issues, "model.d_ff", "is required for family mlp (hidden width)");
    if (m.has_d_in()) Range(issues, "model.d_in", m.d_in(), 1, 1 << 20);
    if (m.has_d_ff()) Range(issues, "model.d_ff", m.d_ff(), 1, 1 << 20);
    return;
  }
  if (m.family() != "gpt2" && m.family() != "llama") return;
  Range(issues, "model.n_head", m.n_head(), 1, 4096);
  Range(issues, "model.d_model", m.d_model(), 1, 1 << 17);
  Range(issues, "model.max_seq_len", m.max_seq_len(), 1, 1 << 20);
  if (m.n_head() >= 1 && m.d_model() >= 1 && m.d_model() % m.n_head() != 0) {
    Add(issues, "model.n_head",
        absl::StrCat("must divide model.d_model (", m.d_model(), " is not a multiple of ",
                     m.n_head(), ")"));
  }
  if (m.n_kv_head() < 1) {
    Add(issues, "model.n_kv_head", absl::StrCat("must be at least 1, got ", m.n_kv_head()));
  } else if (m.n_head() >= 1 && m.n_head() % m.n_kv_head() != 0) {
    Add(issues, "model.n_kv_head",
        absl::StrCat("must divide model.n_head (", m.n_head(), " is not a multiple of ",
                     m.n_kv_head(), ")"));
  }
  if (m.family() == "llama" && !m.has_d_ff()) {
    Add(issues, "model.d_ff", "is required for family llama");
  } else if (m.has_d_ff()) {
    Range(issues, "model.d_ff", m.d_ff(), 1, 1 << 20);
  }
  if (m.family() == "gpt2") {
    if (m.n_kv_head() != m.n_head()) {
      Add(issues, "model.n_kv_head", "must equal model.n_head for family gpt2");
    }
    if (!m.tie_embeddings()) Add(issues, "model.tie_embeddings", "gpt2 always ties embeddings");
  }
  Positive(issues, "model.norm_eps", m.norm_eps());
  Positive(issues, "model.rope_theta", m.rope_theta());
}

void CheckData(const kiln::v1::JobSpec& spec, Issues* issues) {
  const kiln::v1::DataSpec& d = spec.data();
  const kiln::v1::ModelSpec& m = spec.model();
  const bool language_model = m.family() == "gpt2" || m.family() == "llama";
  if (language_model && d.train().empty()) {
    Add(issues, "data.train", "is required (a token file)");
  }
  if (language_model) {
    AtLeast(issues, "data.seq_len", d.seq_len(), 1);
    if (m.max_seq_len() > 0 && d.seq_len() > m.max_seq_len()) {
      Add(issues, "data.seq_len",
          absl::StrCat(d.seq_len(), " exceeds model.max_seq_len (", m.max_seq_len(), ")"));
    }
  }
  // The mlp family evaluates on held-out synthetic rows; language models need a validation file.
  if (language_model && spec.train().eval_every() > 0 && d.val().empty()) {
    Add(issues, "data.val", "is required when train.eval_every > 0");
  }
}

void CheckTrain(const kiln::v1::TrainSpec& t, Issues* issues) {
  Range<int64_t>(issues, "train.steps", t.steps(), 1, int64_t{1} << 40);
  Range(issues, "train.micro_batch", t.micro_batch(), 1, 1 << 20);
  Range(issues, "train.grad_accum", t.grad_accum(), 1, 1 << 16);
  const kiln::v1::OptimizerSpec& o = t.optimizer();
  OneOf(issues, "train.optimizer.name", o.name(), {"adamw", "sgd"});
  Positive(issues, "train.optimizer.lr", o.lr());
  Range(issues, "train.optimizer.beta1", o.beta1(), 0.0, 0.999999);
  Range(issues, "train.optimizer.beta2", o.beta2(), 0.0, 0.999999);
  Positive(issues, "train.optimizer.eps", o.eps());
  Range(issues, "train.optimizer.weight_decay", o.weight_decay(), 0.0, 10.0);
  Range(issues, "train.optimizer.momentum", o.momentum(), 0.0, 0.999999);
  const kiln::v1::LrScheduleSpec& s = t.lr_schedule();
  OneOf(issues, "train.lr_schedule.name", s.name(), {"constant", "linear", "cosine"});
  Range<int64_t>(issues, "train.lr_schedule.warmup_steps", s.warmup_steps(), 0,
                 std::max<int64_t>(t.steps(), 0));
  if (s.min_lr() < 0 || s.min_lr() > o.lr()) {
    Add(issues, "train.lr_schedule.min_lr",
        absl::StrCat(s.min_lr(), " must be in [0, train.optimizer.lr = ", o.lr(), "]"));
  }
  Range(issues, "train.grad_clip", t.grad_clip(), 0.0, 1e9);
  OneOf(issues, "train.precision", t.precision(), {"fp32", "bf16", "fp16"});
  AtLeast(issues, "train.eval_every", t.eval_every(), 0);
  AtLeast(issues, "train.eval_steps", t.eval_steps(), 1);
  AtLeast(issues, "train.log_every", t.log_every(), 1);
  Range(issues, "train.recompute", t.recompute(), 0, 1);
}

void CheckParallel(const kiln::v1::JobSpec& spec, Issues* issues) {
  const kiln::v1::ParallelSpec& p = spec.parallel();
  const kiln::v1::ResourcesSpec& r = spec.resources();
  Range(issues, "resources.workers", r.workers(), 1, kMaxWorkers);
  OneOf(issues, "resources.device", r.device(), {"cpu", "cuda"});
  if (r.has_threads_per_worker()) {
    Range(issues, "resources.threads_per_worker", r.threads_per_worker(), 1, 1024);
  }
  Range(issues, "parallel.zero_stage", p.zero_stage(), 0, 3);
  Range(issues, "parallel.dp", p.dp(), 1, kMaxWorkers);
  Range(issues, "parallel.pp", p.pp(), 1, kMaxWorkers);
  Range(issues, "parallel.tp", p.tp(), 1, kMaxWorkers);
  if (!(p.bucket_mb() > 0) || p.bucket_mb() > 4096) {
    Add(issues, "parallel.bucket_mb", absl::StrCat(p.bucket_mb(), " is out of range (0, 4096]"));
  }
  if (p.dp() >= 1 && p.pp() >= 1 && p.tp() >= 1 &&
      int64_t{p.dp()} * p.pp() * p.tp() != r.workers()) {
    Add(issues, "parallel.dp",
        absl::StrCat("dp * pp * tp = ", int64_t{p.dp()} * p.pp() * p.tp(),
                     " must equal resources.workers = ", r.workers()));
  }
  const kiln::v1::ModelSpec& m = spec.model();
  if (p.pp() > 1 && m.n_layer() >= 1 && p.pp() > m.n_layer()) {
    Add(issues, "parallel.pp",
        absl::StrCat(p.pp(), " pipeline stages exceed model.n_layer = ", m.n_layer()));
  }
  if (p.tp() > 1 && m.n_head() >= 1 && m.n_head() % p.tp() != 0) {
    Add(issues, "parallel.tp", absl::StrCat("must divide model.n_head = ", m.n_head()));
  }
}

void CheckRest(const kiln::v1::JobSpec& spec, Issues* issues) {
  const kiln::v1::CheckpointSpec& c = spec.checkpoint();
  AtLeast(issues, "checkpoint.every_steps", c.every_steps(), 0);
  Range(issues, "checkpoint.keep", c.keep(), 1, 1000);
  const kiln::v1::FaultSpec& f = spec.fault();
  Range(issues, "fault.max_restarts", f.max_restarts(), 0, 100);
  if (!(f.heartbeat_timeout_s() > 0) || f.heartbeat_timeout_s() > 86400) {
    Add(issues, "fault.heartbeat_timeout_s",
        absl::StrCat(f.heartbeat_timeout_s(), " is out of range (0, 86400]"));
  }
  if (!(f.hang_timeout_s() > 0) || f.hang_timeout_s() > 7 * 86400) {
    Add(issues, "fault.hang_timeout_s",
        absl::StrCat(f.hang_timeout_s(), " is out of range (0, 604800]"));
  }
  Range(issues, "fault.restart_backoff_s", f.restart_backoff_s(), 0.0, 3600.0);
  Range(issues, "priority", spec.priority(), -1000, 1000);
  if (spec.name().size() > kMaxNameBytes) {
    Add(issues, "name",
        absl::StrCat("is ", spec.name().size(), " bytes; the limit is ", kMaxNameBytes));
  } else {
    for (char ch : spec.name()) {
      if (!IsNameChar(ch)) {
        Add(issues, "name",
            absl::StrCat("\"", spec.name(), "\" may contain only letters, digits, '-', '_', '.'"));
        break;
      }
    }
  }
  if (spec.labels_size() > kMaxLabels) {
    Add(issues, "labels", absl::StrCat(spec.labels_size(), " labels; the limit is ", kMaxLabels));
  }
  for (const auto& [key, value] : spec.labels()) {
    const std::string path = absl::StrCat("labels[\"", key.substr(0, 64), "\"]");
    if (key.empty() || key.size() > kMaxLabelKeyBytes) {
      Add(issues, path, absl::StrCat("label keys are 1 to ", kMaxLabelKeyBytes, " bytes"));
    }
    if (value.size() > kMaxLabelValueBytes) {
      Add(issues, path, absl::StrCat("label values are at most ", kMaxLabelValueBytes, " bytes"));
    }
  }
}

// Every string of a spec that arrived as a proto (YAML strings are bounded by the loader).
void CheckStringSizes(const google::protobuf::Message& msg, const std::string& path,
                      Issues* issues) {
  const google::protobuf::Reflection* refl = msg.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(msg, &fields);
  for (const auto* field : fields) {
    const std::string field_path = path.empty() ? field->name() : path + "." + field->name();
    if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < refl->FieldSize(msg, field); ++i) {
          CheckStringSizes(refl->GetRepeatedMessage(msg, field, i), field_path, issues);
        }
      } else {
        CheckStringSizes(refl->GetMessage(msg, field), field_path, issues);
      }
    } else if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING &&
               !field->is_repeated()) {
      const std::string value = refl->GetString(msg, field);
      if (value.size() > kMaxStringBytes) {
        Add(issues, field_path,
            absl::StrCat("value is ", value.size(), " bytes; the limit is ", kMaxStringBytes));
      }
    }
  }
}

}  // namespace

std::vector<SpecIssue> ValidateSpec(const kiln::v1::JobSpec& spec) {
  Issues issues;
  CheckStringSizes(spec, "", &issues);
  CheckModel(spec.model(), &issues);
  CheckData(spec, &issues);
  CheckTrain(spec.train(), &issues);
  CheckParallel(spec, &issues);
  CheckRest(spec, &issues);
  return issues;
}

absl::Status NormalizeSpec(kiln::v1::JobSpec* spec) {
  ApplyDefaults(spec);
  return IssuesToStatus(ValidateSpec(*spec));
}

}  // namespace kiln::spec
