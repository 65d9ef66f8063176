// Reverse-mode automatic differentiation as a graph-to-graph transformation: appends, to the same
// graph, the backward nodes that compute d(loss)/d(param) and add it into each parameter's gradient
// slot. See Note [Gradient slots and the loss seed].
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "engine/graph/builder.h"

namespace kiln::graph {

// Note [Gradient slots and the loss seed]
// Each trainable parameter gets a kParamGrad value (its parameter's dtype, in the flat gradient
// buffer). Backward
// never overwrites it: the last node for a parameter is accumulate_grad(g) -> slot, emitted as soon
// as every contribution to g exists, so slots fill in reverse layer order while backward is still
// running (data parallelism starts reducing them then). The caller zeroes the slots before the first
// micro-batch of a step; gradient accumulation is simply running backward again.
// The gradient that enters at the loss is a graph input, `loss_seed` (f32 [1]): 1 for plain
// training, 1/grad_accum for accumulation, the loss scale for fp16 — all without rebuilding.

struct BackwardInfo {
  ValueId loss_seed = kNoValue;  // input: d(objective)/d(loss), set before every run
  int num_forward_nodes = 0;     // nodes [0, num_forward_nodes) are the forward pass
};

// `loss` must be an f32 [1] value. `trainable` (by parameter index; empty = all) selects which
// parameters get gradient slots. Fails when a required gradient passes through an op without one.
absl::StatusOr<BackwardInfo> BuildBackward(GraphBuilder& b, ValueId loss,
                                           const std::vector<bool>& trainable = {});

}  // namespace kiln::graph
