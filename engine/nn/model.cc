// Model configuration checks and the graph assembly shared by every family: inputs, logits, loss,
// and the backward pass.
#include "engine/nn/model.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/passes.h"
#include "engine/nn/gpt2.h"
#include "engine/nn/llama.h"
#include "engine/nn/mlp.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/loss.h"
#include "engine/ops/reduce.h"

namespace kiln::nn {

using graph::kNoValue;
using graph::ValueId;

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](const std::string& field, auto value, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("model.", field, ": ", value, " ", why));
  };
  if (c.family != "gpt2" && c.family != "llama" && c.family != "mlp") {
    return absl::InvalidArgumentError(
        absl::StrCat("model.family: \"", c.family, "\" is not one of gpt2, llama, mlp"));
  }
  if (c.n_layer < 1) return bad("n_layer", c.n_layer, "must be at least 1");
  if (c.vocab_size < 1) return bad("vocab_size", c.vocab_size, "must be at least 1");
  if (c.d_ff < 1) return bad("d_ff", c.d_ff, "must be at least 1");
  if (c.dropout < 0 || c.dropout >= 1) return bad("dropout", c.dropout, "must be in [0, 1)");
  if (c.family == "mlp") {
    if (c.d_in < 1) return bad("d_in", c.d_in, "must be at least 1");
    return absl::OkStatus();
  }
  if (c.d_model < 1) return bad("d_model", c.d_model, "must be at least 1");
  if (c.n_head < 1) return bad("n_head", c.n_head, "must be at least 1");
  if (c.d_model % c.n_head != 0) {
    return bad("n_head", c.n_head, absl::StrCat("must divide d_model ", c.d_model));
  }
  if (c.n_kv_head < 1 || c.n_head % c.n_kv_head != 0) {
    return bad("n_kv_head", c.n_kv_head, absl::StrCat("must divide n_head ", c.n_head));
  }
  if (c.family == "gpt2" && c.n_kv_head != c.n_head) {
    return bad("n_kv_head", c.n_kv_head, "must equal n_head for gpt2");
  }
  if (c.family == "llama" && c.head_dim() % 2 != 0) {
    return bad("n_head", c.n_head, "must leave an even head dimension for rotary embeddings");
  }
  if (c.max_seq_len < 1) return bad("max_seq_len", c.max_seq_len, "must be at least 1");
  if (!(c.norm_eps > 0)) return bad("norm_eps", c.norm_eps, "must be positive");
  if (!(c.rope_theta > 0)) return bad("rope_theta", c.rope_theta, "must be positive");
  return absl::OkStatus();
}

absl::StatusOr<ModelGraph> BuildModel(const ModelConfig& c, const GraphOptions& o) {
  KILN_RETURN_IF_ERROR(ValidateModelConfig(c));
  if (o.batch < 1) return absl::InvalidArgumentError("batch must be at least 1");
  const bool sequence = c.family != "mlp";
  if (sequence && (o.seq_len < 1 || o.seq_len > c.max_seq_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence length ", o.seq_len, " must be in [1, model.max_seq_len ", c.max_seq_len, "]"));
  }
  ModelGraph m;
  graph::GraphBuilder b(&m.graph);
  LayerBuilder lb(b, m.params, o.compute);
  if (c.dropout > 0) m.rng = b.Input("rng", {{2}, DType::kI64});
  ValueId out;
  if (sequence) {
    m.inputs = b.Input("tokens", {{o.batch, o.seq_len}, DType::kI32});
    m.targets = b.Input("targets", {{o.batch, o.seq_len}, DType::kI32});
    if (c.family == "gpt2") {
      out = BuildGpt2Logits(lb, c, m.inputs, m.rng, o.seq_len);
      AddGpt2NameRules(m.params);
    } else {
      out = BuildLlamaLogits(lb, c, m.inputs, m.rng);
      AddLlamaNameRules(c, m.params);
    }
  } else {
    m.inputs = b.Input("features", {{o.batch, c.d_in}, DType::kF32});
    out = BuildMlpOutputs(lb, c, m.inputs);
    m.targets = c.vocab_size > 1 ? b.Input("targets", {{o.batch}, DType::kI32})
                                 : b.Input("targets", {{o.batch, 1}, DType::kF32});
  }
  m.logits = out;
  {
    graph::GraphBuilder::Scope scope(b, "loss");
    if (sequence || c.vocab_size > 1) {
      m.loss = ops::CrossEntropy(b, out, m.targets);
    } else {  // mean squared error, in f32
      const ValueId pred = ops::Cast(b, out, DType::kF32);
      const ValueId diff = ops::Add(b, pred, ops::Scale(b, m.targets, -1.0f));
      m.loss = ops::Mean(b, ops::Mul(b, diff, diff));
    }
  }
  KILN_RETURN_IF_ERROR(b.status());
  m.graph.MarkOutput(m.loss);
  if (o.logits_output) m.graph.MarkOutput(m.logits);
  if (o.backward) {
    KILN_ASSIGN_OR_RETURN(m.backward, graph::BuildBackward(b, m.loss));
  }
  graph::EliminateDeadCode(m.graph);
  if (o.fuse_matmul_epilogues) {
    graph::FuseMatmulBias(m.graph);
    graph::FuseMatmulGelu(m.graph);
    graph::FuseDGeluBiasGradient(m.graph);
    graph::FuseWeightBiasGradient(m.graph);
    graph::FuseNormBackwardResidual(m.graph);
    graph::FuseCrossEntropyScale(m.graph);
  }
  return m;
}

}  // namespace kiln::nn
