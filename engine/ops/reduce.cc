// Schemas of the reductions.
#include "engine/ops/reduce.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::OpSchema;
using graph::ValueId;
using Types = std::vector<TensorType>;

absl::StatusOr<Types> InferFullReduce(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  return Types{{{1}, DType::kF32}};
}

// The gradient of sum/mean: every element receives ds * alpha.
graph::GradFn FullReduceGrad(bool mean) {
  return [mean](GradContext& ctx) -> std::vector<ValueId> {
    const TensorType& x = ctx.type(ctx.input(0));
    const float alpha = mean ? 1.0f / static_cast<float>(x.numel()) : 1.0f;
    return {BroadcastScalar(ctx.b, ctx.grad_output(0), x.shape, x.dtype, alpha)};
  };
}

absl::StatusOr<Types> InferSumTo(const Types& in, const std::any& attrs) {
  const Shape& target = std::any_cast<const SumToAttrs&>(attrs).shape;
  const Shape& s = in[0].shape;
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  const bool suffix = target.size() <= s.size() &&
                      std::equal(target.begin(), target.end(), s.end() - target.size());
  if (!suffix) {
    return absl::InvalidArgumentError(absl::StrCat("target ", ShapeToString(target),
                                                   " is not a trailing part of x's shape ",
                                                   ShapeToString(s)));
  }
  return Types{{target, in[0].dtype}};
}

absl::StatusOr<Types> InferBroadcastScalar(const Types& in, const std::any& attrs) {
  const auto& a = std::any_cast<const BroadcastScalarAttrs&>(attrs);
  if (in[0].dtype != DType::kF32 || in[0].numel() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument scalar is ", in[0].ToString(), ": expected f32 with 1 element"));
  }
  return Types{{a.shape, a.dtype}};
}

struct Registration {
  Registration() {
    auto& r = graph::OpRegistry::Global();
    r.Register(MakeSchema("sum", {"x"}, 1, InferFullReduce, FullReduceGrad(false)));
    r.Register(MakeSchema("mean", {"x"}, 1, InferFullReduce, FullReduceGrad(true)));
    r.Register(MakeSchema("sum_to", {"x"}, 1, InferSumTo, nullptr));
    r.Register(MakeSchema("broadcast_scalar", {"x"}, 1, InferBroadcastScalar, nullptr));
  }
} registration;

}  // namespace

ValueId Sum(graph::GraphBuilder& b, ValueId x) { return b.Apply1("sum", {x}); }
ValueId Mean(graph::GraphBuilder& b, ValueId x) { return b.Apply1("mean", {x}); }
ValueId SumTo(graph::GraphBuilder& b, ValueId x, const Shape& suffix) {
  return b.Apply1("sum_to", {x}, SumToAttrs{suffix});
}
ValueId BroadcastScalar(graph::GraphBuilder& b, ValueId scalar, const Shape& shape, DType dtype,
                        float alpha) {
  return b.Apply1("broadcast_scalar", {scalar}, BroadcastScalarAttrs{shape, dtype, alpha});
}

}  // namespace kiln::ops
