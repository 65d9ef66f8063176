// Building blocks shared by the model builders: declaring parameters together with their table
// entries, and the linear layer. Parameters live in the compute dtype (f32, or bf16/f16 with f32
// master weights kept by the optimizer — see Note [Master weights] in engine/train/session.h);
// norm parameters are cast to f32 at use, since norms compute in f32.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/graph/builder.h"
#include "engine/nn/param_table.h"

namespace kiln::nn {

class LayerBuilder {
 public:
  LayerBuilder(graph::GraphBuilder& b, ParamTable& table, DType compute)
      : b_(b), table_(table), compute_(compute) {}

  // A parameter with one Hugging Face name.
  graph::ValueId Param(const std::string& name, const Shape& shape, ParamRole role, ParamInit init);
  // One graph parameter made of several Hugging Face tensors stacked along axis 0 (their other
  // axes must agree), e.g. Llama's q/k/v projections as one (H + 2*Hkv)*D x C matrix.
  graph::ValueId FusedRows(const std::string& graph_name,
                           const std::vector<std::pair<std::string, Shape>>& parts, ParamRole role,
                           ParamInit init);

  // x (..., in) -> (..., out) in the compute dtype. `weight` is (in, out) (Conv1D layout) or, with
  // out_in, (out, in) (nn.Linear layout). `bias` (out) may be kNoValue.
  graph::ValueId Linear(graph::ValueId x, graph::ValueId weight, graph::ValueId bias, bool out_in);
  // A value in the compute dtype (inputs that arrive as f32, such as MLP features).
  graph::ValueId Compute(graph::ValueId v);
  // A norm gain or bias as the f32 the norm ops take.
  graph::ValueId NormParam(graph::ValueId v);

  graph::GraphBuilder& b() { return b_; }
  DType compute() const { return compute_; }

 private:
  graph::GraphBuilder& b_;
  ParamTable& table_;
  DType compute_;
};

}  // namespace kiln::nn
