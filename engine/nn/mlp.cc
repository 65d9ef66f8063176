// A small MLP for tests and demos: n_layer linear layers (nn.Linear layout, names
// "layers.{i}.weight/bias") with GELU between; a classifier (cross-entropy) or, with one output,
// a regressor (mean squared error).
#include "engine/nn/mlp.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/ops/elementwise.h"

namespace kiln::nn {

using graph::ValueId;

ValueId BuildMlpOutputs(LayerBuilder& lb, const ModelConfig& c, ValueId features) {
  graph::GraphBuilder& b = lb.b();
  ValueId x = lb.Compute(features);  // (B, d_in)
  int64_t width = c.d_in;
  for (int i = 0; i < c.n_layer; ++i) {
    const bool last = i == c.n_layer - 1;
    const int64_t out = last ? c.vocab_size : c.d_ff;
    graph::GraphBuilder::Scope scope(b, absl::StrCat("layers.", i));
    const float bound = 1.0f / std::sqrt(static_cast<float>(width));
    const ValueId w = lb.Param(absl::StrCat("layers.", i, ".weight"), {out, width},
                               ParamRole::kWeight, ParamInit{ParamInit::kNormal, bound});
    const ValueId bias = lb.Param(absl::StrCat("layers.", i, ".bias"), {out}, ParamRole::kBias,
                                  ParamInit{ParamInit::kZeros, 0});
    x = lb.Linear(x, w, bias, true);
    if (!last) x = ops::Gelu(b, x);
    width = out;
  }
  return x;
}

}  // namespace kiln::nn
