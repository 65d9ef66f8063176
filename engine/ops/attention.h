// rope and attention over the packed qkv projection (layout in attrs/attention.h).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/attention.h"

namespace kiln::ops {

// qkv (B, T, (H + 2*Hkv) * D) -> same, with q and k rotated by their position.
graph::ValueId Rope(graph::GraphBuilder& b, graph::ValueId qkv, const RopeAttrs& attrs);
// qkv (B, T, (H + 2*Hkv) * D) -> (B, T, H*D)
graph::ValueId Attention(graph::GraphBuilder& b, graph::ValueId qkv, const AttentionAttrs& attrs);

}  // namespace kiln::ops
