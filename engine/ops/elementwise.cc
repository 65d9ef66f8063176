// Schemas of the element-wise ops: inference (same shape, floating dtypes) and gradients.
#include "engine/ops/elementwise.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"
#include "engine/ops/reduce.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::kNoValue;
using graph::OpSchema;
using Types = std::vector<TensorType>;

// Output like input 0; every input floating and shaped like input 0.
absl::StatusOr<Types> InferSameAsFirst(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  for (size_t i = 1; i < in.size(); ++i) {
    KILN_RETURN_IF_ERROR(RequireSameShape(in[i], absl::StrCat("input ", i), in[0], "input 0"));
  }
  return Types{in[0]};
}

// (dy, x) -> dx like x: used by every unary backward op.
absl::StatusOr<Types> InferUnaryBackward(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[1], "x"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[0], "dy", in[1], "x"));
  return Types{in[1]};
}

OpSchema Schema(const std::string& name, std::vector<std::string> inputs, graph::InferFn infer,
                graph::GradFn grad = nullptr, int inplace_input = -1) {
  OpSchema s = MakeSchema(name, std::move(inputs), 1, std::move(infer), std::move(grad));
  s.inplace_input = inplace_input;
  return s;
}

// A unary op whose gradient is `<name>_backward(dy, x)`.
void RegisterUnaryWithBackward(const std::string& name) {
  const std::string backward = name + "_backward";
  graph::OpRegistry::Global().Register(
      Schema(name, {"x"}, InferSameAsFirst, [backward](GradContext& ctx) -> std::vector<ValueId> {
        return {ctx.b.Apply1(backward, {ctx.grad_output(0), ctx.input(0)})};
      }));
  graph::OpRegistry::Global().Register(Schema(backward, {"dy", "x"}, InferUnaryBackward));
}

absl::StatusOr<Types> InferAdd(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "a"));
  const Shape &a = in[0].shape, &o = in[1].shape;
  const bool suffix = o.size() <= a.size() && std::equal(o.begin(), o.end(), a.end() - o.size());
  if (!suffix) {
    return absl::InvalidArgumentError(absl::StrCat("argument b has shape ", ShapeToString(o),
                                                   " but a has ", ShapeToString(a),
                                                   ": b must equal a trailing part of a's shape"));
  }
  if (in[0].dtype != in[1].dtype) {
    return absl::InvalidArgumentError(absl::StrCat("argument b is ", in[1].ToString(), " but a is ",
                                                   in[0].ToString(), ": dtypes must match"));
  }
  return Types{in[0]};
}

std::vector<ValueId> AddGrad(GradContext& ctx) {
  const ValueId dy = ctx.grad_output(0);
  const Shape& other = ctx.type(ctx.input(1)).shape;
  ValueId db = kNoValue;
  if (ctx.needs_grad(1)) {
    db = other == ctx.type(ctx.input(0)).shape ? dy : SumTo(ctx.b, dy, other);
  }
  return {ctx.needs_grad(0) ? dy : kNoValue, db};
}

std::vector<ValueId> MulGrad(GradContext& ctx) {
  const ValueId dy = ctx.grad_output(0);
  return {ctx.needs_grad(0) ? Mul(ctx.b, dy, ctx.input(1)) : kNoValue,
          ctx.needs_grad(1) ? Mul(ctx.b, dy, ctx.input(0)) : kNoValue};
}

absl::StatusOr<Types> InferScaleBy(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  if (in[1].dtype != DType::kF32 || in[1].numel() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument scalar is ", in[1].ToString(), ": expected f32 with 1 element"));
  }
  return Types{in[0]};
}

absl::StatusOr<Types> InferSwiGlu(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "gate_up"));
  KILN_RETURN_IF_ERROR(RequireRankAtLeast(in[0], 1, "gate_up"));
  if (in[0].shape.back() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("argument gate_up has shape ",
                                                   ShapeToString(in[0].shape),
                                                   ": last dimension must be even ([gate | up])"));
  }
  TensorType out = in[0];
  out.shape.back() /= 2;
  return Types{out};
}

absl::StatusOr<Types> InferSwiGluBackward(const Types& in, const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(Types fwd, InferSwiGlu({in[1]}, attrs));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[0], "dy", fwd[0], "swiglu(gate_up)"));
  return Types{in[1]};
}

absl::StatusOr<Types> InferCast(const Types& in, const std::any& attrs) {
  const DType to = std::any_cast<const CastAttrs&>(attrs).dtype;
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  if (!IsFloating(to)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot cast to ", std::string(DTypeName(to)),
                                                   ": casts are between f32, bf16 and f16"));
  }
  return Types{{in[0].shape, to}};
}

// The slot's dtype is its parameter's; ApplyInto checks the shape.
absl::StatusOr<Types> InferAccumulateGrad(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "g"));
  return Types{in[0]};
}

void RegisterElementwise() {
  auto& r = graph::OpRegistry::Global();
  r.Register(Schema("add", {"a", "b"}, InferAdd, AddGrad, /*inplace_input=*/0));
  r.Register(Schema("mul", {"a", "b"}, InferSameAsFirst, MulGrad));
  r.Register(Schema(
      "scale", {"x"}, InferSameAsFirst,
      [](GradContext& ctx) -> std::vector<ValueId> {
        return {Scale(ctx.b, ctx.grad_output(0), ctx.attrs<ScaleAttrs>().alpha)};
      },
      0));
  // The scalar is a run-time factor (a loss seed), not something to differentiate.
  r.Register(Schema(
      "scale_by", {"x", "scalar"}, InferScaleBy,
      [](GradContext& ctx) -> std::vector<ValueId> {
        return {ScaleBy(ctx.b, ctx.grad_output(0), ctx.input(1)), kNoValue};
      },
      0));
  RegisterUnaryWithBackward("gelu");
  RegisterUnaryWithBackward("silu");
  r.Register(
      Schema("swiglu", {"gate_up"}, InferSwiGlu, [](GradContext& ctx) -> std::vector<ValueId> {
        return {ctx.b.Apply1("swiglu_backward", {ctx.grad_output(0), ctx.input(0)})};
      }));
  r.Register(Schema("swiglu_backward", {"dy", "gate_up"}, InferSwiGluBackward));
  r.Register(Schema("cast", {"x"}, InferCast, [](GradContext& ctx) -> std::vector<ValueId> {
    return {Cast(ctx.b, ctx.grad_output(0), ctx.type(ctx.input(0)).dtype)};
  }));
  r.Register(Schema("accumulate_grad", {"g"}, InferAccumulateGrad));
}

struct Registration {
  Registration() { RegisterElementwise(); }
} registration;

}  // namespace

ValueId Add(GraphBuilder& b, ValueId a, ValueId other) { return b.Apply1("add", {a, other}); }
ValueId Mul(GraphBuilder& b, ValueId a, ValueId other) { return b.Apply1("mul", {a, other}); }
ValueId Scale(GraphBuilder& b, ValueId x, float alpha) {
  return b.Apply1("scale", {x}, ScaleAttrs{alpha});
}
ValueId ScaleBy(GraphBuilder& b, ValueId x, ValueId scalar) {
  return b.Apply1("scale_by", {x, scalar});
}
ValueId Gelu(GraphBuilder& b, ValueId x) { return b.Apply1("gelu", {x}); }
ValueId Silu(GraphBuilder& b, ValueId x) { return b.Apply1("silu", {x}); }
ValueId SwiGlu(GraphBuilder& b, ValueId gate_up) { return b.Apply1("swiglu", {gate_up}); }
ValueId Cast(GraphBuilder& b, ValueId x, DType dtype) {
  if (b.ok() && b.type(x).dtype == dtype) return x;
  return b.Apply1("cast", {x}, CastAttrs{dtype});
}
void AccumulateGrad(GraphBuilder& b, ValueId g, ValueId slot) {
  b.ApplyInto("accumulate_grad", {g}, std::any{}, slot);
}

}  // namespace kiln::ops
