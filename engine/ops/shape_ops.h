// View ops (no kernel, no memory): reshape, and flat_slice (a shaped window into a buffer).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/shape_ops.h"

namespace kiln::ops {

graph::ValueId Reshape(graph::GraphBuilder& b, graph::ValueId x, Shape shape);
// Elements [offset, offset + numel(shape)) of x as a `shape` view.
graph::ValueId FlatSlice(graph::GraphBuilder& b, graph::ValueId x, int64_t offset, Shape shape);

}  // namespace kiln::ops
