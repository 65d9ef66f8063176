// Schemas of cross_entropy (loss and gradient in one pass), embedding and dropout.
#include "engine/ops/loss.h"

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/infer_util.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::kNoValue;
using graph::OpSchema;
using graph::ValueId;
using Types = std::vector<TensorType>;

// Targets (i32) must have the leading shape of `values` (..., last).
absl::Status CheckIndexShape(const TensorType& ids, const std::string& ids_arg,
                             const TensorType& values, const std::string& values_arg) {
  KILN_RETURN_IF_ERROR(RequireDType(ids, DType::kI32, ids_arg));
  const Shape lead(values.shape.begin(), values.shape.end() - 1);
  if (ids.shape != lead) {
    return absl::InvalidArgumentError(absl::StrCat(
        "argument ", ids_arg, " has shape ", ShapeToString(ids.shape), " but ", values_arg, " has ",
        ShapeToString(values.shape), ": expected ", ShapeToString(lead)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Types> InferCrossEntropy(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "logits"));
  KILN_RETURN_IF_ERROR(RequireRankAtLeast(in[0], 2, "logits"));
  KILN_RETURN_IF_ERROR(CheckIndexShape(in[1], "targets", in[0], "logits"));
  return Types{{{1}, DType::kF32}, in[0]};
}

// cross_entropy_scaled(logits, targets, scale f32 [1]) = cross_entropy with dlogits times scale[0]:
// the loss gradient's seed folded into the pass that writes dlogits (engine/graph/passes.h,
// FuseCrossEntropyScale); made only after autodiff, so it has no gradient.
absl::StatusOr<Types> InferCrossEntropyScaled(const Types& in, const std::any& attrs) {
  KILN_ASSIGN_OR_RETURN(Types out, InferCrossEntropy({in[0], in[1]}, attrs));
  if (in[2].dtype != DType::kF32 || in[2].numel() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument scale is ", in[2].ToString(), ": expected f32 with 1 element"));
  }
  return out;
}

std::vector<ValueId> CrossEntropyGrad(GradContext& ctx) {
  // Output 1 already holds d(mean loss)/d(logits); scale it by the incoming loss gradient.
  return {ScaleBy(ctx.b, ctx.output(1), ctx.grad_output(0)), kNoValue};
}

absl::StatusOr<Types> InferEmbedding(const Types& in, const std::any&) {
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "table"));
  KILN_RETURN_IF_ERROR(RequireRank(in[0], 2, "table"));
  KILN_RETURN_IF_ERROR(RequireDType(in[1], DType::kI32, "ids"));
  Shape out = in[1].shape;
  out.push_back(in[0].shape[1]);
  return Types{{out, in[0].dtype}};
}

std::vector<ValueId> EmbeddingGrad(GradContext& ctx) {
  const TensorType& table = ctx.type(ctx.input(0));
  const ValueId g = ctx.b.Apply1("embedding_backward", {ctx.grad_output(0), ctx.input(1)},
                                 EmbeddingAttrs{table.shape[0]});
  return {Cast(ctx.b, g, table.dtype), kNoValue};
}

absl::StatusOr<Types> InferEmbeddingBackward(const Types& in, const std::any& attrs) {
  const int64_t vocab = std::any_cast<const EmbeddingAttrs&>(attrs).vocab_size;
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "dy"));
  KILN_RETURN_IF_ERROR(CheckIndexShape(in[1], "ids", in[0], "dy"));
  if (vocab <= 0) return absl::InvalidArgumentError("vocab_size must be positive");
  return Types{{{vocab, in[0].shape.back()}, DType::kF32}};
}

absl::StatusOr<Types> InferDropout(const Types& in, const std::any& attrs) {
  const float p = std::any_cast<const DropoutAttrs&>(attrs).p;
  KILN_RETURN_IF_ERROR(RequireFloating(in[0], "x"));
  if (in[1].dtype != DType::kI64 || in[1].shape != Shape{2}) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument rng is ", in[1].ToString(), ": expected i64[2] (seed, step)"));
  }
  if (!(p >= 0.0f && p < 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout p ", p, " must be in [0, 1)"));
  }
  return Types{in[0]};
}

std::vector<ValueId> DropoutGrad(GradContext& ctx) {
  return {ctx.b.Apply1("dropout", {ctx.grad_output(0), ctx.input(1)}, ctx.raw_attrs()), kNoValue};
}

struct Registration {
  Registration() {
    auto& r = graph::OpRegistry::Global();
    OpSchema ce =
        MakeSchema("cross_entropy", {"logits", "targets"}, 2, InferCrossEntropy, CrossEntropyGrad);
    ce.inplace_input = 0;  // dlogits may overwrite the logits
    ce.inplace_output = 1;
    r.Register(ce);
    OpSchema scaled = MakeSchema("cross_entropy_scaled", {"logits", "targets", "scale"}, 2,
                                 InferCrossEntropyScaled, nullptr);
    scaled.inplace_input = 0;
    scaled.inplace_output = 1;
    r.Register(scaled);
    r.Register(MakeSchema("embedding", {"table", "ids"}, 1, InferEmbedding, EmbeddingGrad));
    r.Register(MakeSchema("embedding_backward", {"dy", "ids"}, 1, InferEmbeddingBackward, nullptr));
    r.Register(MakeSchema("dropout", {"x", "rng"}, 1, InferDropout, DropoutGrad));
  }
} registration;

}  // namespace

ValueId CrossEntropy(graph::GraphBuilder& b, ValueId logits, ValueId targets, int ignore_index) {
  return b.Apply("cross_entropy", {logits, targets}, CrossEntropyAttrs{ignore_index})[0];
}

ValueId Embedding(graph::GraphBuilder& b, ValueId table, ValueId ids) {
  return b.Apply1("embedding", {table, ids});
}

ValueId Dropout(graph::GraphBuilder& b, ValueId x, ValueId rng, float p, uint32_t stream) {
  return b.Apply1("dropout", {x, rng}, DropoutAttrs{p, stream});
}

}  // namespace kiln::ops
