// Schemas of layer_norm / rms_norm, their backward ops and the backward ops' _add forms.
#include "engine/ops/norm.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::kNoValue;
using graph::OpSchema;
using graph::ValueId;
using Types = std::vector<TensorType>;

// x (..., C) floating; each parameter f32 (C). Returns the row count.
absl::StatusOr<int64_t> CheckNormInputs(const TensorType& x, const Types& params,
                                        const std::vector<std::string>& names) {
  KILN_RETURN_IF_ERROR(RequireFloating(x, "x"));
  KILN_RETURN_IF_ERROR(RequireRankAtLeast(x, 1, "x"));
  const int64_t c = x.shape.back();
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].shape != Shape{c} || params[i].dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument ", names[i], " is ", params[i].ToString(), " but x is ",
                       x.ToString(), ": expected f32[", c, "] (norm parameters stay f32)"));
    }
  }
  return c == 0 ? 0 : x.numel() / c;
}

TensorType Stats(int64_t rows) { return {{rows}, DType::kF32}; }

absl::StatusOr<Types> InferLayerNorm(const Types& in, const std::any&) {
  KILN_ASSIGN_OR_RETURN(int64_t rows, CheckNormInputs(in[0], {in[1], in[2]}, {"gamma", "beta"}));
  return Types{in[0], Stats(rows), Stats(rows)};
}

absl::StatusOr<Types> InferLayerNormBackward(const Types& in, const std::any&) {
  // dy, x, gamma, mean, rstd
  KILN_ASSIGN_OR_RETURN(int64_t rows, CheckNormInputs(in[1], {in[2]}, {"gamma"}));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[0], "dy", in[1], "x"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[3], "mean", Stats(rows), "rows of x"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[4], "rstd", Stats(rows), "rows of x"));
  return Types{in[1], in[2], in[2]};
}

absl::StatusOr<Types> InferRmsNorm(const Types& in, const std::any&) {
  KILN_ASSIGN_OR_RETURN(int64_t rows, CheckNormInputs(in[0], {in[1]}, {"gamma"}));
  return Types{in[0], Stats(rows)};
}

absl::StatusOr<Types> InferRmsNormBackward(const Types& in, const std::any&) {
  // dy, x, gamma, rstd
  KILN_ASSIGN_OR_RETURN(int64_t rows, CheckNormInputs(in[1], {in[2]}, {"gamma"}));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[0], "dy", in[1], "x"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[3], "rstd", Stats(rows), "rows of x"));
  return Types{in[1], in[2]};
}

// Note [Residual gradient in the norm backward]
// In a pre-norm transformer the stream x feeds a norm and the next residual add, so its gradient
// is add(residual gradient, norm backward's dx): a pass that reads two (rows, C) tensors to write a
// third, twice per layer. FuseNormBackwardResidual (engine/graph/passes.h) gives the residual
// gradient to the norm backward instead — layer_norm_backward_add / rms_norm_backward_add — which
// writes dx + residual where it wrote dx. dx is rounded to the storage type first and the sum
// rounded again, exactly the unfused add's arithmetic, so the fused graph computes the same bits.
template <int kInputs>
absl::StatusOr<Types> InferWithResidual(const Types& in, const std::any& attrs,
                                        absl::StatusOr<Types> (*infer)(const Types&,
                                                                       const std::any&)) {
  KILN_ASSIGN_OR_RETURN(Types out, infer(Types(in.begin(), in.begin() + kInputs), attrs));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[kInputs], "residual", in[0], "dy"));
  return out;
}

absl::StatusOr<Types> InferLayerNormBackwardAdd(const Types& in, const std::any& attrs) {
  return InferWithResidual<5>(in, attrs, InferLayerNormBackward);
}

absl::StatusOr<Types> InferRmsNormBackwardAdd(const Types& in, const std::any& attrs) {
  return InferWithResidual<4>(in, attrs, InferRmsNormBackward);
}

std::vector<ValueId> LayerNormGrad(GradContext& ctx) {
  std::vector<ValueId> g =
      ctx.b.Apply("layer_norm_backward",
                  {ctx.grad_output(0), ctx.input(0), ctx.input(1), ctx.output(1), ctx.output(2)},
                  ctx.raw_attrs());
  if (g.size() != 3) return {kNoValue, kNoValue, kNoValue};
  return g;
}

std::vector<ValueId> RmsNormGrad(GradContext& ctx) {
  std::vector<ValueId> g =
      ctx.b.Apply("rms_norm_backward",
                  {ctx.grad_output(0), ctx.input(0), ctx.input(1), ctx.output(1)}, ctx.raw_attrs());
  if (g.size() != 2) return {kNoValue, kNoValue};
  return g;
}

struct Registration {
  Registration() {
    auto& r = graph::OpRegistry::Global();
    r.Register(MakeSchema("layer_norm", {"x", "gamma", "beta"}, 3, InferLayerNorm, LayerNormGrad));
    r.Register(MakeSchema("layer_norm_backward", {"dy", "x", "gamma", "mean", "rstd"}, 3,
                          InferLayerNormBackward, nullptr));
    r.Register(MakeSchema("rms_norm", {"x", "gamma"}, 2, InferRmsNorm, RmsNormGrad));
    r.Register(MakeSchema("rms_norm_backward", {"dy", "x", "gamma", "rstd"}, 2,
                          InferRmsNormBackward, nullptr));
    // Made only by FuseNormBackwardResidual, after autodiff.
    r.Register(MakeSchema("layer_norm_backward_add",
                          {"dy", "x", "gamma", "mean", "rstd", "residual"}, 3,
                          InferLayerNormBackwardAdd, nullptr));
    r.Register(MakeSchema("rms_norm_backward_add", {"dy", "x", "gamma", "rstd", "residual"}, 2,
                          InferRmsNormBackwardAdd, nullptr));
  }
} registration;

}  // namespace

ValueId LayerNorm(graph::GraphBuilder& b, ValueId x, ValueId gamma, ValueId beta, float eps) {
  return b.Apply("layer_norm", {x, gamma, beta}, NormAttrs{eps})[0];
}

ValueId RmsNorm(graph::GraphBuilder& b, ValueId x, ValueId gamma, float eps) {
  return b.Apply("rms_norm", {x, gamma}, NormAttrs{eps})[0];
}

}  // namespace kiln::ops
