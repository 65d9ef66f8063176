// The graph IR: typed values (inputs, parameters, gradients, activations, constants) and nodes that
// apply a registered op to values. Node order is execution order; autodiff appends the backward
// nodes to the same graph, and passes rewrite it before the memory planner and executor see it.
#pragma once

#include <any>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/core/shape.h"
#include "engine/core/tensor.h"

namespace kiln::graph {

struct OpSchema;

using ValueId = int32_t;
using NodeId = int32_t;
constexpr ValueId kNoValue = -1;
constexpr NodeId kNoNode = -1;

struct TensorType {
  Shape shape;
  DType dtype = DType::kF32;

  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int rank() const { return static_cast<int>(shape.size()); }
  bool operator==(const TensorType& o) const { return shape == o.shape && dtype == o.dtype; }
  bool operator!=(const TensorType& o) const { return !(*this == o); }
  std::string ToString() const;  // "bf16[8, 256, 768]"
};

enum class ValueKind : uint8_t {
  kInput,       // written by the caller before each run (token ids, targets, the loss seed)
  kParam,       // lives in the flat parameter buffer
  kParamGrad,   // lives in the flat gradient buffer, accumulated by accumulate_grad nodes
  kActivation,  // produced by a node, placed in the arena by the memory planner
  kConstant,    // data fixed at graph build time
};
const char* ValueKindName(ValueKind kind);

struct Value {
  TensorType type;
  ValueKind kind = ValueKind::kActivation;
  std::string name;
  NodeId producer = kNoNode;
  int producer_output = 0;
  int param_index = -1;  // kParam and kParamGrad: index into Graph::params()
  Tensor constant;       // kConstant: the data
};

struct Node {
  const OpSchema* op = nullptr;
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  std::any attrs;
  std::string name;  // scope-qualified, e.g. "h.3.attn.c_proj" or "grad/h.3.attn.c_proj"
  bool backward = false;
};

class Graph {
 public:
  ValueId AddValue(Value value);
  NodeId AddNode(Node node);

  const Value& value(ValueId id) const;
  Value& mutable_value(ValueId id);
  const Node& node(NodeId id) const;
  Node& mutable_node(NodeId id);
  int num_values() const { return static_cast<int>(values_.size()); }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  const std::vector<Node>& nodes() const { return nodes_; }

  // Parameters in declaration order; grads()[i] is the gradient of params()[i] (kNoValue until
  // autodiff runs or when the parameter gets no gradient).
  const std::vector<ValueId>& params() const { return params_; }
  const std::vector<ValueId>& grads() const { return grads_; }
  const std::vector<ValueId>& inputs() const { return inputs_; }
  // Values the caller reads after a run; they stay live to the end of the plan.
  const std::vector<ValueId>& outputs() const { return outputs_; }
  void MarkOutput(ValueId id);
  void SetGrad(int param_index, ValueId grad);

  // Keeps only the nodes for which keep[i] is true, preserving order, and fixes producer links.
  void RetainNodes(const std::vector<bool>& keep);
  // Makes `order` (node ids, each at most once) the node list; nodes left out are dropped.
  void SetNodeOrder(const std::vector<NodeId>& order);

  // For each value, the nodes that read it, in node order.
  std::vector<std::vector<NodeId>> Consumers() const;
  std::string DebugString() const;

 private:
  friend class GraphBuilder;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> params_, grads_, inputs_, outputs_;
};

}  // namespace kiln::graph
