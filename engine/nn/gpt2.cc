// GPT-2 as Hugging Face GPT2LMHeadModel: learned positions, pre-LayerNorm blocks, GELU (tanh),
// biases everywhere, the LM head tied to wte. Weights keep HF's Conv1D layout (in, out).
#include "engine/nn/gpt2.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/nn/layers.h"
#include "engine/ops/attention.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/loss.h"
#include "engine/ops/matmul.h"
#include "engine/ops/norm.h"

namespace kiln::nn {

using graph::ValueId;

ValueId BuildGpt2Logits(LayerBuilder& lb, const ModelConfig& c, ValueId tokens, ValueId rng,
                        int seq_len) {
  graph::GraphBuilder& b = lb.b();
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff;
  const ParamInit normal{ParamInit::kNormal, 0.02f};
  const ParamInit proj{ParamInit::kNormal, 0.02f / std::sqrt(2.0f * c.n_layer)};
  const ParamInit zeros{ParamInit::kZeros, 0}, ones{ParamInit::kOnes, 0};
  uint32_t dropout_stream = 0;
  auto dropout = [&](ValueId x) {
    return c.dropout > 0 ? ops::Dropout(b, x, rng, c.dropout, dropout_stream++) : x;
  };

  const ValueId wte = lb.Param("wte.weight", {V, C}, ParamRole::kEmbedding, normal);
  const ValueId wpe = lb.Param("wpe.weight", {c.max_seq_len, C}, ParamRole::kPosition,
                               ParamInit{ParamInit::kNormal, 0.01f});
  std::vector<int32_t> positions(seq_len);
  for (int t = 0; t < seq_len; ++t) positions[t] = t;
  const ValueId pos_ids = b.Constant("position_ids", Tensor::FromVector(positions, {seq_len}));
  ValueId x;  // (B, T, C) compute dtype: the residual stream
  {
    graph::GraphBuilder::Scope scope(b, "embed");
    const ValueId tok = ops::Embedding(b, wte, tokens);   // (B, T, C)
    const ValueId pos = ops::Embedding(b, wpe, pos_ids);  // (T, C)
    x = dropout(ops::Add(b, tok, pos));
  }
  ops::AttentionAttrs attn{c.n_head, c.n_head, c.head_dim(), true, 0.0f};
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = absl::StrCat("h.", i, ".");
    graph::GraphBuilder::Scope scope(b, absl::StrCat("h.", i));
    const ValueId ln1_g = lb.Param(p + "ln_1.weight", {C}, ParamRole::kNormGain, ones);
    const ValueId ln1_b = lb.Param(p + "ln_1.bias", {C}, ParamRole::kNormBias, zeros);
    const ValueId attn_w =
        lb.Param(p + "attn.c_attn.weight", {C, 3 * C}, ParamRole::kWeight, normal);
    const ValueId attn_b = lb.Param(p + "attn.c_attn.bias", {3 * C}, ParamRole::kBias, zeros);
    const ValueId aproj_w = lb.Param(p + "attn.c_proj.weight", {C, C}, ParamRole::kWeight, proj);
    const ValueId aproj_b = lb.Param(p + "attn.c_proj.bias", {C}, ParamRole::kBias, zeros);
    const ValueId ln2_g = lb.Param(p + "ln_2.weight", {C}, ParamRole::kNormGain, ones);
    const ValueId ln2_b = lb.Param(p + "ln_2.bias", {C}, ParamRole::kNormBias, zeros);
    const ValueId fc_w = lb.Param(p + "mlp.c_fc.weight", {C, F}, ParamRole::kWeight, normal);
    const ValueId fc_b = lb.Param(p + "mlp.c_fc.bias", {F}, ParamRole::kBias, zeros);
    const ValueId mproj_w = lb.Param(p + "mlp.c_proj.weight", {F, C}, ParamRole::kWeight, proj);
    const ValueId mproj_b = lb.Param(p + "mlp.c_proj.bias", {C}, ParamRole::kBias, zeros);
    {
      graph::GraphBuilder::Scope s(b, "attn");
      const ValueId h = ops::LayerNorm(b, x, lb.NormParam(ln1_g), lb.NormParam(ln1_b), c.norm_eps);
      const ValueId qkv = lb.Linear(h, attn_w, attn_b, false);  // (B, T, 3C)
      const ValueId a = ops::Attention(b, qkv, attn);           // (B, T, C)
      x = ops::Add(b, x, dropout(lb.Linear(a, aproj_w, aproj_b, false)));
    }
    {
      graph::GraphBuilder::Scope s(b, "mlp");
      const ValueId h = ops::LayerNorm(b, x, lb.NormParam(ln2_g), lb.NormParam(ln2_b), c.norm_eps);
      const ValueId u = ops::Gelu(b, lb.Linear(h, fc_w, fc_b, false));  // (B, T, F)
      x = ops::Add(b, x, dropout(lb.Linear(u, mproj_w, mproj_b, false)));
    }
  }
  graph::GraphBuilder::Scope scope(b, "head");
  const ValueId lnf_g = lb.Param("ln_f.weight", {C}, ParamRole::kNormGain, ones);
  const ValueId lnf_b = lb.Param("ln_f.bias", {C}, ParamRole::kNormBias, zeros);
  x = ops::LayerNorm(b, x, lb.NormParam(lnf_g), lb.NormParam(lnf_b), c.norm_eps);
  return ops::Matmul(b, x, wte, false, true);  // (B, T, V)
}

void AddGpt2NameRules(ParamTable& table) {
  table.accepted_prefixes = {"transformer."};
  table.ignored_suffixes = {".attn.bias", ".attn.masked_bias"};
  table.aliases = {{"lm_head.weight", "wte.weight"}};
}

}  // namespace kiln::nn
