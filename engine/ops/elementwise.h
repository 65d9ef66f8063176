// Element-wise ops and their backward ops (semantics in attrs/elementwise.h): add (with suffix
// broadcast, which is also bias add), mul, scale, scale_by, gelu, silu, swiglu, cast, and
// accumulate_grad, the node that adds a parameter's gradient into its slot.
#pragma once

#include "engine/graph/builder.h"
#include "engine/ops/attrs/elementwise.h"

namespace kiln::ops {

using graph::GraphBuilder;
using graph::ValueId;

ValueId Add(GraphBuilder& b, ValueId a, ValueId other);  // other: same shape or a suffix of it
ValueId Mul(GraphBuilder& b, ValueId a, ValueId other);
ValueId Scale(GraphBuilder& b, ValueId x, float alpha);
ValueId ScaleBy(GraphBuilder& b, ValueId x, ValueId scalar);  // scalar: f32 [1]
ValueId Gelu(GraphBuilder& b, ValueId x);
ValueId Silu(GraphBuilder& b, ValueId x);
ValueId SwiGlu(GraphBuilder& b, ValueId gate_up);  // (..., 2F) -> (..., F)
ValueId Cast(GraphBuilder& b, ValueId x, DType dtype);
// Emits `slot += g` (slot: the f32 gradient value of a parameter).
void AccumulateGrad(GraphBuilder& b, ValueId g, ValueId slot);

}  // namespace kiln::ops
