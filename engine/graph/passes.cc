// Dead-code elimination (more passes — recompute, fusion — join here as they arrive).
#include "engine/graph/passes.h"

#include "engine/graph/op_schema.h"

namespace kiln::graph {

int EliminateDeadCode(Graph& graph) {
  std::vector<bool> live_value(graph.num_values(), false);
  for (ValueId o : graph.outputs()) live_value[o] = true;
  std::vector<bool> keep(graph.num_nodes(), false);
  for (int n = graph.num_nodes() - 1; n >= 0; --n) {
    const Node& node = graph.node(n);
    bool live = node.op->has_side_effects;
    for (ValueId out : node.outputs) {
      live = live || live_value[out] || graph.value(out).kind == ValueKind::kParamGrad;
    }
    if (!live) continue;
    keep[n] = true;
    for (ValueId in : node.inputs) live_value[in] = true;
  }
  int removed = 0;
  for (bool k : keep) removed += k ? 0 : 1;
  if (removed > 0) graph.RetainNodes(keep);
  return removed;
}

}  // namespace kiln::graph
