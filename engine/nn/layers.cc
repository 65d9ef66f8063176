// Parameter declaration and the linear layer.
#include "engine/nn/layers.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"

namespace kiln::nn {

namespace {
bool DecayFor(ParamRole role, const Shape& shape) {
  return shape.size() >= 2 && role != ParamRole::kNormGain && role != ParamRole::kNormBias &&
         role != ParamRole::kBias;
}
}  // namespace

graph::ValueId LayerBuilder::Param(const std::string& name, const Shape& shape, ParamRole role,
                                   ParamInit init) {
  const graph::ValueId v = b_.Param(name, {shape, compute_});
  ParamEntry e;
  e.name = name;
  e.shape = shape;
  e.graph_param = b_.graph().value(v).param_index;
  e.role = role;
  e.weight_decay = DecayFor(role, shape);
  e.init = init;
  table_.entries.push_back(e);
  return v;
}

graph::ValueId LayerBuilder::FusedRows(const std::string& graph_name,
                                       const std::vector<std::pair<std::string, Shape>>& parts,
                                       ParamRole role, ParamInit init) {
  KILN_CHECK(!parts.empty());
  Shape fused = parts[0].second;
  fused[0] = 0;
  for (const auto& [name, shape] : parts) {
    KILN_CHECK_EQ(shape.size(), fused.size()) << name;
    fused[0] += shape[0];
  }
  const graph::ValueId v = b_.Param(graph_name, {fused, compute_});
  int64_t offset = 0;
  for (const auto& [name, shape] : parts) {
    ParamEntry e;
    e.name = name;
    e.shape = shape;
    e.graph_param = b_.graph().value(v).param_index;
    e.offset = offset;
    e.role = role;
    e.weight_decay = DecayFor(role, shape);
    e.init = init;
    table_.entries.push_back(e);
    offset += NumElements(shape);
  }
  return v;
}

graph::ValueId LayerBuilder::Compute(graph::ValueId v) { return ops::Cast(b_, v, compute_); }

graph::ValueId LayerBuilder::NormParam(graph::ValueId v) { return ops::Cast(b_, v, DType::kF32); }

graph::ValueId LayerBuilder::Linear(graph::ValueId x, graph::ValueId weight, graph::ValueId bias,
                                    bool out_in) {
  graph::ValueId y = ops::Matmul(b_, x, weight, false, out_in);
  if (bias != graph::kNoValue) y = ops::Add(b_, y, bias);
  return y;
}

}  // namespace kiln::nn
