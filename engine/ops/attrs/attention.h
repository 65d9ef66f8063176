// Attributes of the transformer-specific ops, which read a packed projection
// qkv: (B, T, (H + 2*Hkv) * D) = per token [q heads | k heads | v heads], head h at columns
// [h*D, (h+1)*D) of its part. Grouped-query attention: query head h reads kv head h / (H / Hkv).
//   rope(qkv) -> qkv': rotate-half rotary embedding (Hugging Face Llama convention) on the q and k
//     parts at position t (the T index), v copied. With inverse = true it rotates by -angle (the
//     gradient). inv_freq[i] = 1 / theta^(2i/D), angle = t * inv_freq[i], computed in f32.
//   attention(qkv) -> (out, lse): out (B, T, H*D) like qkv's dtype; lse (B, H, T) f32 is the
//     log-sum-exp of each query's scaled scores (saved for the backward). softmax(q.k * scale) with
//     a causal mask when causal.
//   attention_backward(dout, qkv, out, lse) -> dqkv (B, T, (H + 2*Hkv) * D).
#pragma once

namespace kiln::ops {

struct AttentionAttrs {
  int n_head = 1;
  int n_kv_head = 1;
  int head_dim = 1;
  bool causal = true;
  float scale = 0.0f;  // 0: 1/sqrt(head_dim)
};

struct RopeAttrs {
  int n_head = 1;
  int n_kv_head = 1;
  int head_dim = 1;
  float theta = 10000.0f;
  bool inverse = false;
};

}  // namespace kiln::ops
