// reshape schema: -1 inference; its gradient reshapes back.
#include "engine/ops/shape_ops.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"

namespace kiln::ops {
namespace {

absl::StatusOr<std::vector<TensorType>> InferReshape(const std::vector<TensorType>& in,
                                                     const std::any& attrs) {
  Shape shape = std::any_cast<const ReshapeAttrs&>(attrs).shape;
  const int64_t n = in[0].numel();
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < static_cast<int>(shape.size()); ++i) {
    if (shape[i] == -1 && infer < 0) {
      infer = i;
    } else if (shape[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("target shape ", ShapeToString(shape), " has an invalid size"));
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0 && known > 0 && n % known == 0) shape[infer] = n / known;
  if (NumElements(shape) != n) {
    return absl::InvalidArgumentError(absl::StrCat("argument x has shape ",
                                                   ShapeToString(in[0].shape), " (", n,
                                                   " elements), target ", ShapeToString(shape)));
  }
  return std::vector<TensorType>{{shape, in[0].dtype}};
}

std::vector<graph::ValueId> ReshapeGrad(graph::GradContext& ctx) {
  return {Reshape(ctx.b, ctx.grad_output(0), ctx.type(ctx.input(0)).shape)};
}

graph::OpSchema ReshapeSchema() {
  graph::OpSchema s;
  s.name = "reshape";
  s.input_names = {"x"};
  s.infer = InferReshape;
  s.grad = ReshapeGrad;
  s.is_view = true;
  return s;
}

KILN_REGISTER_OP(ReshapeSchema());

absl::StatusOr<std::vector<TensorType>> InferFlatSlice(const std::vector<TensorType>& in,
                                                       const std::any& attrs) {
  const auto& a = std::any_cast<const FlatSliceAttrs&>(attrs);
  const int64_t n = NumElements(a.shape);
  if (a.offset < 0 || a.offset + n > in[0].numel()) {
    return absl::InvalidArgumentError(absl::StrCat("slice [", a.offset, ", ", a.offset + n,
                                                   ") is outside argument x of ", in[0].numel(),
                                                   " elements"));
  }
  return std::vector<TensorType>{{a.shape, in[0].dtype}};
}

graph::OpSchema FlatSliceSchema() {
  graph::OpSchema s;
  s.name = "flat_slice";
  s.input_names = {"x"};
  s.infer = InferFlatSlice;
  s.is_view = true;
  s.view_offset = [](const std::any& attrs) {
    return std::any_cast<const FlatSliceAttrs&>(attrs).offset;
  };
  return s;
}

KILN_REGISTER_OP(FlatSliceSchema());

}  // namespace

graph::ValueId Reshape(graph::GraphBuilder& b, graph::ValueId x, Shape shape) {
  return b.Apply1("reshape", {x}, ReshapeAttrs{std::move(shape)});
}

graph::ValueId FlatSlice(graph::GraphBuilder& b, graph::ValueId x, int64_t offset, Shape shape) {
  return b.Apply1("flat_slice", {x}, FlatSliceAttrs{offset, std::move(shape)});
}

}  // namespace kiln::ops
