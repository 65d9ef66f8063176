// GPT-2 graph builder (used by model.cc).
#pragma once

#include "engine/graph/graph.h"
#include "engine/nn/layers.h"
#include "engine/nn/model.h"

namespace kiln::nn {

// tokens i32 (B, T) -> logits (B, T, V) in the compute dtype.
graph::ValueId BuildGpt2Logits(LayerBuilder& lb, const ModelConfig& config, graph::ValueId tokens,
                               graph::ValueId rng, int seq_len);
// Hugging Face naming rules: "transformer." prefix, ignored mask buffers, lm_head tied to wte.
void AddGpt2NameRules(ParamTable& table);

}  // namespace kiln::nn
