// MLP graph builder (used by model.cc).
#pragma once

#include "engine/graph/graph.h"
#include "engine/nn/layers.h"
#include "engine/nn/model.h"

namespace kiln::nn {

// features (B, d_in) -> outputs (B, vocab_size) in the compute dtype.
graph::ValueId BuildMlpOutputs(LayerBuilder& lb, const ModelConfig& config,
                               graph::ValueId features);

}  // namespace kiln::nn
