// Llama graph builder (used by model.cc).
#pragma once

#include "engine/graph/graph.h"
#include "engine/nn/layers.h"
#include "engine/nn/model.h"

namespace kiln::nn {

// tokens i32 (B, T) -> logits (B, T, V) in the compute dtype.
graph::ValueId BuildLlamaLogits(LayerBuilder& lb, const ModelConfig& config, graph::ValueId tokens,
                                graph::ValueId rng);
void AddLlamaNameRules(const ModelConfig& config, ParamTable& table);

}  // namespace kiln::nn
