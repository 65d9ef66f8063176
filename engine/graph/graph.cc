// Graph IR bookkeeping.
#include "engine/graph/graph.h"

#include <sstream>

#include "engine/core/status.h"
#include "engine/graph/op_schema.h"

namespace kiln::graph {

std::string TensorType::ToString() const {
  return std::string(DTypeName(dtype)) + ShapeToString(shape);
}

const char* ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kInput:
      return "input";
    case ValueKind::kParam:
      return "param";
    case ValueKind::kParamGrad:
      return "grad";
    case ValueKind::kActivation:
      return "act";
    case ValueKind::kConstant:
      return "const";
  }
  return "?";
}

ValueId Graph::AddValue(Value value) {
  values_.push_back(std::move(value));
  return static_cast<ValueId>(values_.size() - 1);
}

NodeId Graph::AddNode(Node node) {
  const NodeId id = static_cast<NodeId>(nodes_.size());
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    Value& v = values_[node.outputs[i]];
    v.producer = id;
    v.producer_output = static_cast<int>(i);
  }
  nodes_.push_back(std::move(node));
  return id;
}

const Value& Graph::value(ValueId id) const {
  KILN_CHECK(id >= 0 && id < num_values()) << "value id " << id;
  return values_[id];
}

Value& Graph::mutable_value(ValueId id) {
  KILN_CHECK(id >= 0 && id < num_values()) << "value id " << id;
  return values_[id];
}

const Node& Graph::node(NodeId id) const {
  KILN_CHECK(id >= 0 && id < num_nodes()) << "node id " << id;
  return nodes_[id];
}

Node& Graph::mutable_node(NodeId id) {
  KILN_CHECK(id >= 0 && id < num_nodes()) << "node id " << id;
  return nodes_[id];
}

void Graph::MarkOutput(ValueId id) {
  for (ValueId o : outputs_) {
    if (o == id) return;
  }
  outputs_.push_back(id);
}

void Graph::SetGrad(int param_index, ValueId grad) {
  KILN_CHECK(param_index >= 0 && param_index < static_cast<int>(params_.size()));
  if (grads_.size() < params_.size()) grads_.resize(params_.size(), kNoValue);
  grads_[param_index] = grad;
}

void Graph::RetainNodes(const std::vector<bool>& keep) {
  KILN_CHECK_EQ(keep.size(), nodes_.size());
  std::vector<Node> kept;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (keep[i]) {
      kept.push_back(std::move(nodes_[i]));
    } else {
      for (ValueId o : nodes_[i].outputs) values_[o].producer = kNoNode;
    }
  }
  nodes_ = std::move(kept);
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (size_t o = 0; o < nodes_[n].outputs.size(); ++o) {
      values_[nodes_[n].outputs[o]].producer = static_cast<NodeId>(n);
      values_[nodes_[n].outputs[o]].producer_output = static_cast<int>(o);
    }
  }
}

void Graph::SetNodeOrder(const std::vector<NodeId>& order) {
  std::vector<Node> reordered;
  reordered.reserve(order.size());
  for (NodeId n : order) reordered.push_back(std::move(nodes_.at(n)));
  for (Value& v : values_) v.producer = kNoNode;
  nodes_ = std::move(reordered);
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (size_t o = 0; o < nodes_[n].outputs.size(); ++o) {
      values_[nodes_[n].outputs[o]].producer = static_cast<NodeId>(n);
      values_[nodes_[n].outputs[o]].producer_output = static_cast<int>(o);
    }
  }
}

std::vector<std::vector<NodeId>> Graph::Consumers() const {
  std::vector<std::vector<NodeId>> consumers(values_.size());
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (ValueId in : nodes_[n].inputs) {
      if (in == kNoValue) continue;
      auto& list = consumers[in];
      if (list.empty() || list.back() != static_cast<NodeId>(n)) {
        list.push_back(static_cast<NodeId>(n));
      }
    }
  }
  return consumers;
}

std::string Graph::DebugString() const {
  std::ostringstream os;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    const Node& node = nodes_[n];
    os << n << (node.backward ? " [bwd] " : " ") << node.op->name << " '" << node.name << "' (";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (i) os << ", ";
      if (node.inputs[i] == kNoValue) {
        os << "-";
      } else {
        os << "%" << node.inputs[i] << ":" << values_[node.inputs[i]].type.ToString();
      }
    }
    os << ") -> (";
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      if (i) os << ", ";
      os << "%" << node.outputs[i] << ":" << values_[node.outputs[i]].type.ToString();
    }
    os << ")\n";
  }
  return os.str();
}

}  // namespace kiln::graph
