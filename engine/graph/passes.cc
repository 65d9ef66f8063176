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

int FuseMatmulBias(Graph& graph) {
  const OpSchema* fused = OpRegistry::Global().Find("matmul_bias");
  if (fused == nullptr) return 0;
  const std::vector<std::vector<NodeId>> readers = graph.Consumers();
  std::vector<bool> keep(graph.num_nodes(), true);
  int count = 0;
  for (NodeId n = 0; n < graph.num_nodes(); ++n) {
    const Node& add = graph.node(n);
    if (add.op->name != "add") continue;
    const ValueId product = add.inputs[0], bias = add.inputs[1];
    const Value& pv = graph.value(product);
    if (pv.producer == kNoNode || readers[product].size() != 1) continue;
    const Node& mm = graph.node(pv.producer);
    if (mm.op->name != "matmul" || !keep[pv.producer]) continue;
    const Value& bv = graph.value(bias);
    if (bv.type.rank() != 1 || bv.type.shape[0] != pv.type.shape.back() ||
        bv.type.dtype != pv.type.dtype ||
        (pv.type.dtype != DType::kF32 && pv.type.dtype != DType::kBF16)) {
      continue;
    }
    if (bv.producer != kNoNode && bv.producer >= pv.producer) continue;
    Node& m = graph.mutable_node(pv.producer);
    m.op = fused;
    m.inputs.push_back(bias);
    m.outputs[0] = add.outputs[0];
    keep[n] = false;
    ++count;
  }
  if (count > 0) graph.RetainNodes(keep);  // also re-links the fused outputs' producers
  return count;
}

}  // namespace kiln::graph
