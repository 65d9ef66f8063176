// GraphBuilder: the API model code and gradient builders use to add values and nodes. It runs each
// op's inference as nodes are added and keeps the first error (a sticky Status), so model code reads
// top to bottom and checks status() once. Also GradContext, what a gradient builder sees.
#pragma once

#include <any>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/graph/graph.h"
#include "engine/graph/op_schema.h"

namespace kiln::graph {

class GraphBuilder {
 public:
  explicit GraphBuilder(Graph* graph) : graph_(graph) {}

  ValueId Input(const std::string& name, TensorType type);
  ValueId Param(const std::string& name, TensorType type);
  ValueId Constant(const std::string& name, Tensor data);

  // Adds a node applying `op`; returns its outputs, or kNoValue outputs once any error happened.
  std::vector<ValueId> Apply(std::string_view op, std::vector<ValueId> inputs,
                             std::any attrs = {});
  // Apply for single-output ops.
  ValueId Apply1(std::string_view op, std::vector<ValueId> inputs, std::any attrs = {});
  // Adds a node whose single output is an existing value (accumulate_grad writing a gradient slot).
  void ApplyInto(std::string_view op, std::vector<ValueId> inputs, std::any attrs,
                 ValueId existing_output);
  // Creates (once) the gradient slot of parameter `param_index`.
  ValueId ParamGrad(int param_index);

  const TensorType& type(ValueId id) const { return graph_->value(id).type; }
  const absl::Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }
  // Records an error (the first one wins).
  void Fail(absl::Status status);
  Graph& graph() { return *graph_; }

  // Names nodes created while it lives: "h.0" then "attn" gives "h.0.attn.<op>".
  class Scope {
   public:
    Scope(GraphBuilder& b, const std::string& name);
    ~Scope();

   private:
    GraphBuilder& b_;
    size_t previous_length_;
  };
  void set_backward(bool backward) { backward_ = backward; }
  std::string QualifiedName(std::string_view leaf) const;

 private:
  std::vector<ValueId> AddNode(const OpSchema* schema, std::vector<ValueId> inputs,
                               std::any attrs, ValueId existing_output);
  Graph* graph_;
  absl::Status status_;
  std::string scope_;
  bool backward_ = false;
};

// What a gradient builder sees: the forward node's values and the gradients of its outputs.
class GradContext {
 public:
  GradContext(GraphBuilder& b, Node node, std::vector<ValueId> grad_outputs,
              std::vector<bool> needs_grad)
      : b(b), node_(std::move(node)), grad_outputs_(std::move(grad_outputs)),
        needs_grad_(std::move(needs_grad)) {}

  GraphBuilder& b;
  ValueId input(int i) const { return node_.inputs.at(i); }
  ValueId output(int i) const { return node_.outputs.at(i); }
  // kNoValue when no gradient reaches output i.
  ValueId grad_output(int i) const { return grad_outputs_.at(i); }
  bool needs_grad(int i) const { return needs_grad_.at(i); }
  const TensorType& type(ValueId id) const { return b.type(id); }
  const std::any& raw_attrs() const { return node_.attrs; }
  template <typename T>
  const T& attrs() const {
    return *std::any_cast<T>(&node_.attrs);
  }

 private:
  Node node_;
  std::vector<ValueId> grad_outputs_;
  std::vector<bool> needs_grad_;
};

}  // namespace kiln::graph
