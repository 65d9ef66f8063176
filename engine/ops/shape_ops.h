// reshape: a view with a new shape (no kernel, no memory).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/shape_ops.h"

namespace kiln::ops {

graph::ValueId Reshape(graph::GraphBuilder& b, graph::ValueId x, Shape shape);

}  // namespace kiln::ops
