// A small GPT-2 configuration for tests that build whole training graphs: two heads of
// d_model / 2, an MLP four times as wide, the given depth, vocabulary and sequence length.
#pragma once

#include "engine/nn/model.h"

namespace kiln::testing {

inline nn::ModelConfig TinyGpt2Config(int n_layer, int d_model, int vocab_size, int max_seq_len) {
  nn::ModelConfig c;
  c.family = "gpt2";
  c.n_layer = n_layer;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = d_model;
  c.d_ff = 4 * d_model;
  c.vocab_size = vocab_size;
  c.max_seq_len = max_seq_len;
  return c;
}

}  // namespace kiln::testing
