// matmul schema: shape inference over batch axes and transposes, and the gradient
// dA = dY op(B)^T, dB = op(A)^T dY (summed over the batch when B is shared, by flattening rows).
#include "engine/ops/matmul.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"
#include "engine/ops/shape_ops.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::kNoValue;

absl::StatusOr<std::vector<TensorType>> InferMatmul(const std::vector<TensorType>& in,
                                                    const std::any& attrs) {
  const auto& at = std::any_cast<const MatmulAttrs&>(attrs);
  const TensorType &a = in[0], &w = in[1];
  KILN_RETURN_IF_ERROR(RequireFloating(a, "a"));
  KILN_RETURN_IF_ERROR(RequireRankAtLeast(a, 2, "a"));
  KILN_RETURN_IF_ERROR(RequireRankAtLeast(w, 2, "b"));
  if (a.dtype != w.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("argument b is ", w.ToString(), " but a is ",
                                                   a.ToString(), ": dtypes must match"));
  }
  const int ra = a.rank(), rb = w.rank();
  const int64_t m = at.trans_a ? a.shape[ra - 1] : a.shape[ra - 2];
  const int64_t k = at.trans_a ? a.shape[ra - 2] : a.shape[ra - 1];
  const int64_t kb = at.trans_b ? w.shape[rb - 1] : w.shape[rb - 2];
  const int64_t n = at.trans_b ? w.shape[rb - 2] : w.shape[rb - 1];
  if (k != kb) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument b has shape ", ShapeToString(w.shape), " but a has ",
                     ShapeToString(a.shape), ": inner dimensions ", k, " and ", kb,
                     " differ (trans_a=", at.trans_a, ", trans_b=", at.trans_b, ")"));
  }
  if (rb > 2) {
    if (ra != rb || !std::equal(a.shape.begin(), a.shape.end() - 2, w.shape.begin())) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument b has shape ", ShapeToString(w.shape), " but a has ",
                       ShapeToString(a.shape), ": batch dimensions differ"));
    }
  } else if (ra > 2 && at.trans_a) {
    return absl::InvalidArgumentError(absl::StrCat("argument a has shape ", ShapeToString(a.shape),
                                                   ": trans_a needs a 2-D a or a batched b"));
  }
  Shape out(a.shape.begin(), a.shape.end() - 2);
  out.push_back(m);
  out.push_back(n);
  return std::vector<TensorType>{{out, a.dtype}};
}

// Collapses all leading axes of a (..., X) value into rows: (rows, X).
ValueId FlattenRows(GraphBuilder& b, ValueId v) {
  const Shape& s = b.type(v).shape;
  if (s.size() == 2) return v;
  return Reshape(b, v, {-1, s.back()});
}

std::vector<ValueId> MatmulGrad(GradContext& ctx) {
  const auto& at = ctx.attrs<MatmulAttrs>();
  GraphBuilder& b = ctx.b;
  const ValueId a = ctx.input(0), w = ctx.input(1), dy = ctx.grad_output(0);
  ValueId da = kNoValue, dw = kNoValue;
  if (ctx.needs_grad(0)) {
    da = at.trans_a ? Matmul(b, w, dy, at.trans_b, true) : Matmul(b, dy, w, false, !at.trans_b);
  }
  if (ctx.needs_grad(1)) {
    const bool shared_w = ctx.type(w).rank() == 2 && ctx.type(a).rank() > 2;
    const ValueId a2 = shared_w ? FlattenRows(b, a) : a;
    const ValueId dy2 = shared_w ? FlattenRows(b, dy) : dy;
    dw = at.trans_b ? Matmul(b, dy2, a2, true, at.trans_a) : Matmul(b, a2, dy2, !at.trans_a, false);
  }
  return {da, dw};
}

graph::OpSchema MatmulSchema() {
  graph::OpSchema s;
  s.name = "matmul";
  s.input_names = {"a", "b"};
  s.infer = InferMatmul;
  s.grad = MatmulGrad;
  return s;
}

KILN_REGISTER_OP(MatmulSchema());

// The fused forms (attrs/matmul.h) are made only by the fusion passes, after autodiff
// (engine/graph/passes.h), so they need no gradient. matmul_bias and matmul_bias_gelu take a bias
// (N); matmul_dgelu takes the gelu input pre, shaped like the product, and matmul_dgelu_bgrad also
// returns the column sums of its product, the bias gradient (N); matmul_bgrad returns b's.
absl::Status RequireBias(const TensorType& bias, const TensorType& product) {
  const int64_t n = product.shape.back();
  if (bias.shape != Shape{n} || bias.dtype != product.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument bias is ", bias.ToString(), ": expected ",
                     std::string(DTypeName(product.dtype)), "[", n, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TensorType>> InferMatmulBias(const std::vector<TensorType>& in,
                                                        const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(std::vector<TensorType> out, InferMatmul({in[0], in[1]}, attrs));
  KILN_RETURN_IF_ERROR(RequireBias(in[2], out[0]));
  return out;
}

absl::StatusOr<std::vector<TensorType>> InferMatmulBiasGelu(const std::vector<TensorType>& in,
                                                            const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(std::vector<TensorType> out, InferMatmulBias(in, attrs));
  return std::vector<TensorType>{out[0], out[0]};  // (pre, y)
}

absl::StatusOr<std::vector<TensorType>> InferMatmulDGelu(const std::vector<TensorType>& in,
                                                         const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(std::vector<TensorType> out, InferMatmul({in[0], in[1]}, attrs));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[2], "pre", out[0], "the product"));
  return out;
}

absl::StatusOr<std::vector<TensorType>> InferMatmulDGeluBGrad(const std::vector<TensorType>& in,
                                                              const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(std::vector<TensorType> out, InferMatmulDGelu(in, attrs));
  return std::vector<TensorType>{out[0], TensorType{Shape{out[0].shape.back()}, out[0].dtype}};
}

// matmul_bgrad: b a shared (K, N) matrix (not transposed), whose row sums are the second output.
absl::StatusOr<std::vector<TensorType>> InferMatmulBGrad(const std::vector<TensorType>& in,
                                                         const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(std::vector<TensorType> out, InferMatmul(in, attrs));
  if (std::any_cast<const MatmulAttrs&>(attrs).trans_b || in[1].rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matmul_bgrad sums the rows of b: b must be a 2-D (K, N) matrix, got ", in[1].ToString()));
  }
  return std::vector<TensorType>{out[0], TensorType{Shape{in[1].shape[1]}, in[1].dtype}};
}

graph::OpSchema FusedMatmulSchema(const std::string& name, const std::string& third_input,
                                  int num_outputs, graph::InferFn infer) {
  graph::OpSchema s;
  s.name = name;
  s.input_names = {"a", "b"};
  if (!third_input.empty()) s.input_names.push_back(third_input);
  s.num_outputs = num_outputs;
  s.infer = std::move(infer);
  return s;
}

KILN_REGISTER_OP(FusedMatmulSchema("matmul_bias", "bias", 1, InferMatmulBias));
KILN_REGISTER_OP(FusedMatmulSchema("matmul_bias_gelu", "bias", 2, InferMatmulBiasGelu));
KILN_REGISTER_OP(FusedMatmulSchema("matmul_dgelu", "pre", 1, InferMatmulDGelu));
KILN_REGISTER_OP(FusedMatmulSchema("matmul_dgelu_bgrad", "pre", 2, InferMatmulDGeluBGrad));
KILN_REGISTER_OP(FusedMatmulSchema("matmul_bgrad", "", 2, InferMatmulBGrad));

}  // namespace

ValueId Matmul(GraphBuilder& b, ValueId a, ValueId w, bool trans_a, bool trans_b) {
  return b.Apply1("matmul", {a, w}, MatmulAttrs{trans_a, trans_b});
}

}  // namespace kiln::ops
