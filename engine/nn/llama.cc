// Llama as Hugging Face LlamaForCausalLM: RMSNorm, rotate-half RoPE, grouped-query attention,
// SwiGLU MLP down(silu(gate(x)) * up(x)), no biases. q/k/v and gate/up are each one fused graph
// parameter whose row ranges are the Hugging Face tensors (nn.Linear layout, (out, in)).
#include "engine/nn/llama.h"

#include "absl/strings/str_cat.h"
#include "engine/ops/attention.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/loss.h"
#include "engine/ops/matmul.h"
#include "engine/ops/norm.h"

namespace kiln::nn {

using graph::kNoValue;
using graph::ValueId;

ValueId BuildLlamaLogits(LayerBuilder& lb, const ModelConfig& c, ValueId tokens, ValueId rng) {
  graph::GraphBuilder& b = lb.b();
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff, D = c.head_dim();
  const int64_t H = c.n_head, Hkv = c.n_kv_head;
  const ParamInit normal{ParamInit::kNormal, 0.02f}, ones{ParamInit::kOnes, 0};
  uint32_t dropout_stream = 0;
  auto dropout = [&](ValueId x) {
    return c.dropout > 0 ? ops::Dropout(b, x, rng, c.dropout, dropout_stream++) : x;
  };

  const ValueId embed =
      lb.Param("model.embed_tokens.weight", {V, C}, ParamRole::kEmbedding, normal);
  ValueId x;  // (B, T, C) compute dtype
  {
    graph::GraphBuilder::Scope scope(b, "embed");
    x = dropout(ops::Embedding(b, embed, tokens));
  }
  const ops::RopeAttrs rope{c.n_head, c.n_kv_head, static_cast<int>(D), c.rope_theta, false};
  const ops::AttentionAttrs attn{c.n_head, c.n_kv_head, static_cast<int>(D), true, 0.0f};
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    graph::GraphBuilder::Scope scope(b, absl::StrCat("layers.", i));
    const ValueId ln1 = lb.Param(p + "input_layernorm.weight", {C}, ParamRole::kNormGain, ones);
    const ValueId wqkv = lb.FusedRows(p + "self_attn.qkv_proj.weight",
                                      {{p + "self_attn.q_proj.weight", {H * D, C}},
                                       {p + "self_attn.k_proj.weight", {Hkv * D, C}},
                                       {p + "self_attn.v_proj.weight", {Hkv * D, C}}},
                                      ParamRole::kWeight, normal);
    const ValueId wo =
        lb.Param(p + "self_attn.o_proj.weight", {C, H * D}, ParamRole::kWeight, normal);
    const ValueId ln2 =
        lb.Param(p + "post_attention_layernorm.weight", {C}, ParamRole::kNormGain, ones);
    const ValueId wgu =
        lb.FusedRows(p + "mlp.gate_up_proj.weight",
                     {{p + "mlp.gate_proj.weight", {F, C}}, {p + "mlp.up_proj.weight", {F, C}}},
                     ParamRole::kWeight, normal);
    const ValueId wdown = lb.Param(p + "mlp.down_proj.weight", {C, F}, ParamRole::kWeight, normal);
    {
      graph::GraphBuilder::Scope s(b, "attn");
      const ValueId h = ops::RmsNorm(b, x, lb.NormParam(ln1), c.norm_eps);
      const ValueId qkv =
          ops::Rope(b, lb.Linear(h, wqkv, kNoValue, true), rope);  // (B, T, (H+2Hkv)D)
      const ValueId a = ops::Attention(b, qkv, attn);              // (B, T, H*D)
      x = ops::Add(b, x, dropout(lb.Linear(a, wo, kNoValue, true)));
    }
    {
      graph::GraphBuilder::Scope s(b, "mlp");
      const ValueId h = ops::RmsNorm(b, x, lb.NormParam(ln2), c.norm_eps);
      const ValueId u = ops::SwiGlu(b, lb.Linear(h, wgu, kNoValue, true));  // (B, T, F)
      x = ops::Add(b, x, dropout(lb.Linear(u, wdown, kNoValue, true)));
    }
  }
  graph::GraphBuilder::Scope scope(b, "head");
  const ValueId norm = lb.Param("model.norm.weight", {C}, ParamRole::kNormGain, ones);
  x = ops::RmsNorm(b, x, lb.NormParam(norm), c.norm_eps);
  const ValueId head =
      c.tie_embeddings ? embed : lb.Param("lm_head.weight", {V, C}, ParamRole::kWeight, normal);
  return ops::Matmul(b, x, head, false, true);  // (B, T, V)
}

void AddLlamaNameRules(const ModelConfig& c, ParamTable& table) {
  table.ignored_suffixes = {".rotary_emb.inv_freq"};
  if (c.tie_embeddings) table.aliases = {{"lm_head.weight", "model.embed_tokens.weight"}};
}

}  // namespace kiln::nn
