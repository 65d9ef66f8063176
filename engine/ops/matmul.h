// matmul: out = op(a) @ op(b) with optional transposes and batching (see attrs/matmul.h).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/matmul.h"

namespace kiln::ops {

using graph::GraphBuilder;
using graph::ValueId;

ValueId Matmul(GraphBuilder& b, ValueId a, ValueId w, bool trans_a = false, bool trans_b = false);

}  // namespace kiln::ops
