// The fused softmax cross-entropy loss, embedding lookup and dropout (see attrs/loss.h).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/loss.h"

namespace kiln::ops {

// logits (..., V), targets i32 (...) -> loss f32 [1] (mean over counted rows).
graph::ValueId CrossEntropy(graph::GraphBuilder& b, graph::ValueId logits, graph::ValueId targets,
                            int ignore_index = -100);
// table (V, C), ids i32 (...) -> (..., C)
graph::ValueId Embedding(graph::GraphBuilder& b, graph::ValueId table, graph::ValueId ids);
// rng: i64 [2] = (seed, step)
graph::ValueId Dropout(graph::GraphBuilder& b, graph::ValueId x, graph::ValueId rng, float p,
                       uint32_t stream);

}  // namespace kiln::ops
