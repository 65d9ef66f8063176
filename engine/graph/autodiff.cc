// Reverse-mode autodiff over the graph IR.
#include "engine/graph/autodiff.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "engine/ops/elementwise.h"

namespace kiln::graph {
namespace {

// Sums the contributions to one value's gradient in a fixed order (deterministic graphs).
ValueId SumContributions(GraphBuilder& b, const std::vector<ValueId>& parts) {
  if (parts.empty()) return kNoValue;
  ValueId total = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) total = ops::Add(b, total, parts[i]);
  return total;
}

}  // namespace

absl::StatusOr<BackwardInfo> BuildBackward(GraphBuilder& b, ValueId loss,
                                           const std::vector<bool>& trainable) {
  KILN_RETURN_IF_ERROR(b.status());
  Graph& g = b.graph();
  const TensorType& loss_type = g.value(loss).type;
  if (loss_type != TensorType{{1}, DType::kF32}) {
    return absl::InvalidArgumentError(
        absl::StrCat("the loss must be f32[1], got ", loss_type.ToString()));
  }
  BackwardInfo info;
  info.num_forward_nodes = g.num_nodes();
  const int num_params = static_cast<int>(g.params().size());
  auto is_trainable = [&](int p) { return trainable.empty() || trainable[p]; };

  // Which values depend on a trainable parameter.
  std::vector<bool> requires_grad(g.num_values(), false);
  for (int p = 0; p < num_params; ++p) requires_grad[g.params()[p]] = is_trainable(p);
  for (int n = 0; n < info.num_forward_nodes; ++n) {
    const Node& node = g.node(n);
    bool any = false;
    for (ValueId in : node.inputs) any = any || requires_grad[in];
    for (ValueId out : node.outputs) requires_grad[out] = any;
  }

  // The earliest forward node reading each parameter: once the reverse sweep has passed it, the
  // parameter's gradient is complete.
  std::vector<int> first_reader(num_params, -1);
  for (int n = info.num_forward_nodes - 1; n >= 0; --n) {
    for (ValueId in : g.node(n).inputs) {
      const Value& v = g.value(in);
      if (v.kind == ValueKind::kParam) first_reader[v.param_index] = n;
    }
  }
  std::vector<std::vector<int>> params_completed_at(info.num_forward_nodes);
  for (int p = 0; p < num_params; ++p) {
    if (first_reader[p] >= 0 && is_trainable(p)) params_completed_at[first_reader[p]].push_back(p);
  }

  b.set_backward(true);
  info.loss_seed = b.Input("loss_seed", {{1}, DType::kF32});
  std::map<ValueId, std::vector<ValueId>> contributions;
  contributions[loss].push_back(info.loss_seed);

  for (int n = info.num_forward_nodes - 1; n >= 0; --n) {
    const Node node = g.node(n);  // copy: adding nodes may move the vector
    std::vector<ValueId> grad_outputs;
    bool any_grad = false;
    {
      GraphBuilder::Scope scope(b, node.name);
      for (ValueId out : node.outputs) {
        auto it = contributions.find(out);
        grad_outputs.push_back(it == contributions.end() ? kNoValue
                                                         : SumContributions(b, it->second));
        any_grad = any_grad || grad_outputs.back() != kNoValue;
      }
    }
    std::vector<bool> needs_grad;
    bool any_needed = false;
    for (ValueId in : node.inputs) {
      needs_grad.push_back(requires_grad[in]);
      any_needed = any_needed || requires_grad[in];
    }
    if (any_grad && any_needed) {
      if (!node.op->grad) {
        return absl::InvalidArgumentError(absl::StrCat(
            "op ", node.op->name, " (node ", node.name,
            ") has no gradient, but a trainable parameter's gradient flows through it"));
      }
      std::vector<ValueId> input_grads;
      {
        GraphBuilder::Scope scope(b, node.name);
        GradContext ctx(b, node, grad_outputs, needs_grad);
        input_grads = node.op->grad(ctx);
      }
      KILN_RETURN_IF_ERROR(b.status());
      KILN_CHECK_EQ(input_grads.size(), node.inputs.size()) << "gradient of " << node.op->name;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        if (!needs_grad[i] || input_grads[i] == kNoValue) continue;
        const TensorType& want = g.value(node.inputs[i]).type;
        const TensorType& got = g.value(input_grads[i]).type;
        if (want != got) {
          return absl::InternalError(absl::StrCat("gradient builder of ", node.op->name,
                                                  " returned ", got.ToString(), " for input ", i,
                                                  " of type ", want.ToString()));
        }
        contributions[node.inputs[i]].push_back(input_grads[i]);
      }
    }
    for (int p : params_completed_at[n]) {
      auto it = contributions.find(g.params()[p]);
      if (it == contributions.end()) continue;  // read, but not on the path to the loss
      GraphBuilder::Scope scope(b, g.value(g.params()[p]).name);
      const ValueId total = SumContributions(b, it->second);
      ops::AccumulateGrad(b, total, b.ParamGrad(p));
      contributions.erase(it);
    }
  }
  b.set_backward(false);
  KILN_RETURN_IF_ERROR(b.status());
  return info;
}

}  // namespace kiln::graph
