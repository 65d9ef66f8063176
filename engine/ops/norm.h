// layer_norm and rms_norm (statistics and parameters in f32; see attrs/norm.h). The builders return
// the normalized output; the saved statistics are extra outputs the backward nodes read.
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/norm.h"

namespace kiln::ops {

graph::ValueId LayerNorm(graph::GraphBuilder& b, graph::ValueId x, graph::ValueId gamma,
                         graph::ValueId beta, float eps);
graph::ValueId RmsNorm(graph::GraphBuilder& b, graph::ValueId x, graph::ValueId gamma, float eps);

}  // namespace kiln::ops
