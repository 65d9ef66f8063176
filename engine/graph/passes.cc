// Graph passes between autodiff and planning: dead-code elimination, the matmul epilogue
// fusions (bias; gelu forward and backward; the gelu layer's bias gradient), the residual
// gradient folded into the norm backward, and the loss seed folded into the loss gradient.
#include "engine/graph/passes.h"

#include <algorithm>
#include <string>

#include "engine/graph/op_schema.h"
#include "engine/ops/attrs/matmul.h"

namespace kiln::graph {
namespace {

// A linear layer's matmul: one shared 2-D weight and no transposed a, so every batch folds into
// the rows of one matmul — the form the fused kernels take (a bias or auxiliary matrix per batch
// would need batch strides).
bool FoldsIntoOneMatmul(const Graph& graph, const Node& mm) {
  const auto* attrs = std::any_cast<ops::MatmulAttrs>(&mm.attrs);
  return attrs != nullptr && !attrs->trans_a && graph.value(mm.inputs[1]).type.rank() == 2;
}

bool FusibleDType(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16; }

bool IsGraphOutput(const Graph& graph, ValueId v) {
  return std::find(graph.outputs().begin(), graph.outputs().end(), v) != graph.outputs().end();
}

using Readers = std::vector<std::vector<NodeId>>;

// The skeleton of every fusion pass: fold(n, readers, keep) looks at node n and, when it folds n
// into an earlier node (rewriting that node's op, inputs and outputs), returns true; n is then
// dropped. keep[m] is false for the nodes already dropped. At the end the graph keeps the other
// nodes, which re-links every moved output to its new producer. Returns the number of folds.
template <typename Fold>
int FoldNodes(Graph& graph, Fold&& fold) {
  const Readers readers = graph.Consumers();
  std::vector<bool> keep(graph.num_nodes(), true);
  int count = 0;
  for (NodeId n = 0; n < graph.num_nodes(); ++n) {
    if (fold(n, readers, keep)) {
      keep[n] = false;
      ++count;
    }
  }
  if (count > 0) graph.RetainNodes(keep);
  return count;
}

}  // namespace

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
  return FoldNodes(graph, [&](NodeId n, const Readers& readers, const std::vector<bool>& keep) {
    const Node& add = graph.node(n);
    if (add.op->name != "add") return false;
    const ValueId product = add.inputs[0], bias = add.inputs[1];
    const Value& pv = graph.value(product);
    if (pv.producer == kNoNode || readers[product].size() != 1) return false;
    const Node& mm = graph.node(pv.producer);
    if (mm.op->name != "matmul" || !keep[pv.producer] || !FoldsIntoOneMatmul(graph, mm)) {
      return false;
    }
    if (IsGraphOutput(graph, product)) return false;
    const Value& bv = graph.value(bias);
    if (bv.type.rank() != 1 || bv.type.shape[0] != pv.type.shape.back() ||
        bv.type.dtype != pv.type.dtype || !FusibleDType(pv.type.dtype)) {
      return false;
    }
    if (bv.producer != kNoNode && bv.producer >= pv.producer) return false;
    Node& m = graph.mutable_node(pv.producer);
    m.op = fused;
    m.inputs.push_back(bias);
    m.outputs[0] = add.outputs[0];
    return true;
  });
}

int FuseMatmulGelu(Graph& graph) {
  const OpSchema* forward = OpRegistry::Global().Find("matmul_bias_gelu");
  const OpSchema* backward = OpRegistry::Global().Find("matmul_dgelu");
  if (forward == nullptr || backward == nullptr) return 0;
  return FoldNodes(graph, [&](NodeId n, const Readers& readers, const std::vector<bool>& keep) {
    const Node& node = graph.node(n);
    if (node.op->name == "gelu") {
      // gelu(pre = matmul_bias(a, b, bias)) -> matmul_bias_gelu(a, b, bias) = (pre, y). pre keeps
      // its other readers (gelu_backward): the fused node still writes it.
      const ValueId pre = node.inputs[0];
      const Value& pv = graph.value(pre);
      if (pv.producer == kNoNode || !keep[pv.producer]) return false;
      const Node& mm = graph.node(pv.producer);
      if (mm.op->name != "matmul_bias" || !FoldsIntoOneMatmul(graph, mm)) return false;
      Node& m = graph.mutable_node(pv.producer);
      m.op = forward;
      m.outputs = {pre, node.outputs[0]};
      return true;
    }
    if (node.op->name != "gelu_backward") return false;
    // gelu_backward(dy = matmul(a, b), pre) -> matmul_dgelu(a, b, pre), when dy has no other
    // reader and pre exists before the matmul runs.
    const ValueId dy = node.inputs[0], pre = node.inputs[1];
    const Value& dv = graph.value(dy);
    if (dv.producer == kNoNode || !keep[dv.producer] || readers[dy].size() != 1) return false;
    if (IsGraphOutput(graph, dy) || !FusibleDType(dv.type.dtype)) return false;
    const Node& mm = graph.node(dv.producer);
    if (mm.op->name != "matmul" || !FoldsIntoOneMatmul(graph, mm)) return false;
    const Value& prev = graph.value(pre);
    if (prev.type != dv.type || prev.producer == kNoNode || prev.producer >= dv.producer) {
      return false;
    }
    Node& m = graph.mutable_node(dv.producer);
    m.op = backward;
    m.inputs.push_back(pre);
    m.outputs[0] = node.outputs[0];
    return true;
  });
}

int FuseDGeluBiasGradient(Graph& graph) {
  const OpSchema* fused = OpRegistry::Global().Find("matmul_dgelu_bgrad");
  if (fused == nullptr) return 0;
  return FoldNodes(graph, [&](NodeId n, const Readers&, const std::vector<bool>&) {
    const Node& sum = graph.node(n);
    if (sum.op->name != "sum_to") return false;
    const Value& dv = graph.value(sum.inputs[0]);  // dpre
    if (dv.producer == kNoNode || dv.producer_output != 0) return false;
    if (graph.node(dv.producer).op->name != "matmul_dgelu") return false;  // also: not fused yet
    const Value& bv = graph.value(sum.outputs[0]);
    if (bv.type.shape != Shape{dv.type.shape.back()} || bv.type.dtype != dv.type.dtype) {
      return false;
    }
    // dbias moves earlier (to the matmul, which precedes the sum): its readers still follow.
    Node& m = graph.mutable_node(dv.producer);
    m.op = fused;
    m.outputs.push_back(sum.outputs[0]);
    return true;
  });
}

int FuseWeightBiasGradient(Graph& graph) {
  const OpSchema* fused = OpRegistry::Global().Find("matmul_bgrad");
  if (fused == nullptr) return 0;
  const Readers readers = graph.Consumers();
  const int num_nodes = graph.num_nodes();
  // The weight-gradient matmul that reads dy (or dy's rows folded by a reshape, as MatmulGrad
  // folds them) as its b, with trans_a, or kNoNode.
  const auto weight_gradient_of = [&](ValueId dy) {
    std::vector<ValueId> views = {dy};
    for (NodeId r : readers[dy]) {
      if (graph.node(r).op->name == "reshape") views.push_back(graph.node(r).outputs[0]);
    }
    for (ValueId b : views) {
      if (graph.value(b).type.rank() != 2) continue;
      for (NodeId r : readers[b]) {
        const Node& mm = graph.node(r);
        const auto* attrs = std::any_cast<ops::MatmulAttrs>(&mm.attrs);
        if (mm.op->name == "matmul" && mm.inputs[1] == b && attrs != nullptr && attrs->trans_a &&
            !attrs->trans_b && graph.value(mm.inputs[0]).type.rank() == 2) {
          return r;
        }
      }
    }
    return kNoNode;
  };
  std::vector<bool> keep(num_nodes, true);
  std::vector<std::vector<NodeId>> moved_after(num_nodes);  // readers of dbias, re-placed
  int count = 0;
  for (NodeId n = 0; n < num_nodes; ++n) {
    const Node& sum = graph.node(n);
    if (sum.op->name != "sum_to") continue;
    const ValueId dy = sum.inputs[0], dbias = sum.outputs[0];
    const Value& dv = graph.value(dy);
    const Value& bv = graph.value(dbias);
    if (dv.type.rank() < 2 || bv.type.shape != Shape{dv.type.shape.back()} ||
        bv.type.dtype != dv.type.dtype || !FusibleDType(dv.type.dtype)) {
      continue;
    }
    const NodeId r = weight_gradient_of(dy);
    if (r == kNoNode) continue;
    // dbias now comes from the matmul. Its readers that ran before it — the bias's
    // accumulate_grad — move to just after it, when nothing reads their results before then.
    std::vector<NodeId> early;
    bool movable = true;
    for (NodeId q : readers[dbias]) {
      if (q > r) continue;
      movable = movable && graph.node(q).op->name == "accumulate_grad";
      for (ValueId out : graph.node(q).outputs) {
        for (NodeId later : readers[out]) movable = movable && later > r;
      }
      early.push_back(q);
    }
    if (!movable) continue;
    Node& m = graph.mutable_node(r);
    m.op = fused;
    m.outputs.push_back(dbias);
    keep[n] = false;
    for (NodeId q : early) keep[q] = false;
    moved_after[r] = std::move(early);
    ++count;
  }
  if (count == 0) return 0;
  std::vector<NodeId> order;
  for (NodeId n = 0; n < num_nodes; ++n) {
    if (keep[n]) order.push_back(n);
    for (NodeId q : moved_after[n]) order.push_back(q);
  }
  graph.SetNodeOrder(order);  // also re-links dbias to its matmul
  return count;
}

int FuseNormBackwardResidual(Graph& graph) {
  const OpSchema* layer = OpRegistry::Global().Find("layer_norm_backward_add");
  const OpSchema* rms = OpRegistry::Global().Find("rms_norm_backward_add");
  if (layer == nullptr || rms == nullptr) return 0;
  return FoldNodes(graph, [&](NodeId n, const Readers& readers, const std::vector<bool>& keep) {
    const Node& add = graph.node(n);
    if (add.op->name != "add") return false;
    for (int side = 0; side < 2; ++side) {  // which operand is the norm backward's dx
      const ValueId dx = add.inputs[side], residual = add.inputs[1 - side];
      const Value& dv = graph.value(dx);
      if (dv.producer == kNoNode || dv.producer_output != 0 || !keep[dv.producer]) continue;
      const std::string& op = graph.node(dv.producer).op->name;
      if (op != "layer_norm_backward" && op != "rms_norm_backward") continue;
      if (readers[dx].size() != 1 || IsGraphOutput(graph, dx)) continue;
      const Value& rv = graph.value(residual);
      if (rv.type != dv.type || residual == dx) continue;  // a same-shape add, no broadcast
      if (rv.producer != kNoNode && rv.producer >= dv.producer) continue;
      Node& norm = graph.mutable_node(dv.producer);
      norm.op = op == "layer_norm_backward" ? layer : rms;
      norm.inputs.push_back(residual);
      norm.outputs[0] = add.outputs[0];
      return true;
    }
    return false;
  });
}

int FuseCrossEntropyScale(Graph& graph) {
  const OpSchema* fused = OpRegistry::Global().Find("cross_entropy_scaled");
  if (fused == nullptr) return 0;
  return FoldNodes(graph, [&](NodeId n, const Readers& readers, const std::vector<bool>& keep) {
    const Node& scale = graph.node(n);
    if (scale.op->name != "scale_by") return false;
    const ValueId grad = scale.inputs[0], seed = scale.inputs[1];
    const Value& gv = graph.value(grad);
    if (gv.producer == kNoNode || gv.producer_output != 1 || !keep[gv.producer]) return false;
    if (graph.node(gv.producer).op->name != "cross_entropy") return false;
    if (readers[grad].size() != 1 || IsGraphOutput(graph, grad)) return false;
    const Value& sv = graph.value(seed);
    if (sv.producer != kNoNode && sv.producer >= gv.producer) return false;
    Node& ce = graph.mutable_node(gv.producer);
    ce.op = fused;
    ce.inputs.push_back(seed);
    ce.outputs[1] = scale.outputs[0];
    return true;
  });
}

}  // namespace kiln::graph
