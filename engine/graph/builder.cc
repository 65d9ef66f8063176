// GraphBuilder: node creation with inference and sticky errors.
#include "engine/graph/builder.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln::graph {

ValueId GraphBuilder::Input(const std::string& name, TensorType type) {
  Value v;
  v.type = std::move(type);
  v.kind = ValueKind::kInput;
  v.name = name;
  const ValueId id = graph_->AddValue(std::move(v));
  graph_->inputs_.push_back(id);
  return id;
}

ValueId GraphBuilder::Param(const std::string& name, TensorType type) {
  Value v;
  v.type = std::move(type);
  v.kind = ValueKind::kParam;
  v.name = name;
  v.param_index = static_cast<int>(graph_->params_.size());
  const ValueId id = graph_->AddValue(std::move(v));
  graph_->params_.push_back(id);
  graph_->grads_.push_back(kNoValue);
  return id;
}

ValueId GraphBuilder::Constant(const std::string& name, Tensor data) {
  Value v;
  v.type = TensorType{data.sizes(), data.dtype()};
  v.kind = ValueKind::kConstant;
  v.name = name;
  v.constant = data.Contiguous();
  return graph_->AddValue(std::move(v));
}

ValueId GraphBuilder::ParamGrad(int param_index) {
  const ValueId existing = graph_->grads_.at(param_index);
  if (existing != kNoValue) return existing;
  const Value& p = graph_->value(graph_->params_.at(param_index));
  Value g;
  g.type = p.type;
  g.kind = ValueKind::kParamGrad;
  g.name = "grad/" + p.name;
  g.param_index = param_index;
  const ValueId id = graph_->AddValue(std::move(g));
  graph_->grads_[param_index] = id;
  return id;
}

void GraphBuilder::Fail(absl::Status status) {
  if (status_.ok()) status_ = std::move(status);
}

std::string GraphBuilder::QualifiedName(std::string_view leaf) const {
  std::string name = scope_.empty() ? std::string(leaf) : scope_ + "." + std::string(leaf);
  return backward_ ? "grad/" + name : name;
}

GraphBuilder::Scope::Scope(GraphBuilder& b, const std::string& name)
    : b_(b), previous_length_(b.scope_.size()) {
  b_.scope_ = b_.scope_.empty() ? name : b_.scope_ + "." + name;
}

GraphBuilder::Scope::~Scope() { b_.scope_.resize(previous_length_); }

std::vector<ValueId> GraphBuilder::Apply(std::string_view op, std::vector<ValueId> inputs,
                                         std::any attrs) {
  const OpSchema* schema = OpRegistry::Global().Find(op);
  if (schema == nullptr) {
    Fail(absl::NotFoundError(absl::StrCat("unknown op \"", std::string(op), "\"")));
    return {kNoValue};
  }
  return AddNode(schema, std::move(inputs), std::move(attrs), kNoValue);
}

ValueId GraphBuilder::Apply1(std::string_view op, std::vector<ValueId> inputs, std::any attrs) {
  std::vector<ValueId> out = Apply(op, std::move(inputs), std::move(attrs));
  return out.empty() ? kNoValue : out[0];
}

void GraphBuilder::ApplyInto(std::string_view op, std::vector<ValueId> inputs, std::any attrs,
                             ValueId existing_output) {
  const OpSchema* schema = OpRegistry::Global().Find(op);
  KILN_CHECK(schema != nullptr) << "unknown op " << op;
  AddNode(schema, std::move(inputs), std::move(attrs), existing_output);
}

std::vector<ValueId> GraphBuilder::AddNode(const OpSchema* schema, std::vector<ValueId> inputs,
                                           std::any attrs, ValueId existing_output) {
  const std::vector<ValueId> failed(schema->num_outputs, kNoValue);
  if (!status_.ok()) return failed;
  const std::string node_name = QualifiedName(schema->name);
  if (schema->variadic ? inputs.empty()
                       : static_cast<int>(inputs.size()) != schema->num_inputs()) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        "op ", schema->name, " (node ", node_name, "): expected ", schema->num_inputs(),
        " inputs (", absl::StrJoin(schema->input_names, ", "), "), got ", inputs.size())));
    return failed;
  }
  std::vector<TensorType> input_types;
  for (ValueId in : inputs) {
    if (in == kNoValue || in < 0 || in >= graph_->num_values()) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("op ", schema->name, " (node ", node_name, "): invalid input value")));
      return failed;
    }
    input_types.push_back(graph_->value(in).type);
  }
  absl::StatusOr<std::vector<TensorType>> out_types = schema->infer(input_types, attrs);
  if (!out_types.ok()) {
    Fail(absl::Status(out_types.status().code(),
                      absl::StrCat("op ", schema->name, " (node ", node_name,
                                   "): ", out_types.status().message())));
    return failed;
  }
  KILN_CHECK_EQ(static_cast<int>(out_types->size()), schema->num_outputs) << schema->name;
  Node node;
  node.op = schema;
  node.inputs = std::move(inputs);
  node.attrs = std::move(attrs);
  node.name = node_name;
  node.backward = backward_;
  if (existing_output != kNoValue) {
    KILN_CHECK_EQ(schema->num_outputs, 1);
    const TensorType& have = graph_->value(existing_output).type;
    if (have.shape != (*out_types)[0].shape) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("op ", schema->name, " (node ", node_name, "): writes ",
                       (*out_types)[0].ToString(), " into ", have.ToString())));
      return failed;
    }
    node.outputs.push_back(existing_output);
  } else {
    for (int i = 0; i < schema->num_outputs; ++i) {
      Value v;
      v.type = (*out_types)[i];
      v.kind = ValueKind::kActivation;
      v.name = schema->num_outputs == 1 ? node_name : absl::StrCat(node_name, ":", i);
      node.outputs.push_back(graph_->AddValue(std::move(v)));
    }
  }
  std::vector<ValueId> outputs = node.outputs;
  graph_->AddNode(std::move(node));
  return outputs;
}

}  // namespace kiln::graph
