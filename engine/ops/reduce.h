// Reductions and their adjoint: sum and mean over all elements (to an f32 scalar), sum_to (sum the
// leading axes away) and broadcast_scalar (fill a shape from a scalar; the gradient of sum/mean).
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/elementwise.h"

namespace kiln::ops {

graph::ValueId Sum(graph::GraphBuilder& b, graph::ValueId x);   // -> f32 [1]
graph::ValueId Mean(graph::GraphBuilder& b, graph::ValueId x);  // -> f32 [1]
graph::ValueId SumTo(graph::GraphBuilder& b, graph::ValueId x, const Shape& suffix);
graph::ValueId BroadcastScalar(graph::GraphBuilder& b, graph::ValueId scalar, const Shape& shape,
                               DType dtype, float alpha);

}  // namespace kiln::ops
