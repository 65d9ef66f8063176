// Schemas of rope (its gradient is the inverse rotation) and fused causal attention (its backward
// recomputes probabilities from the saved log-sum-exp).
#include "engine/ops/attention.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/infer_util.h"

namespace kiln::ops {
namespace {

using graph::GradContext;
using graph::OpSchema;
using graph::ValueId;
using Types = std::vector<TensorType>;

absl::Status CheckHeads(int n_head, int n_kv_head, int head_dim) {
  if (n_head <= 0 || n_kv_head <= 0 || head_dim <= 0 || n_head % n_kv_head != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_head ", n_head, ", n_kv_head ", n_kv_head, ", head_dim ", head_dim,
                     ": need positive sizes with n_head a multiple of n_kv_head"));
  }
  return absl::OkStatus();
}

// qkv (B, T, (H + 2*Hkv) * D), floating.
absl::Status CheckQkv(const TensorType& qkv, int n_head, int n_kv_head, int head_dim) {
  KILN_RETURN_IF_ERROR(CheckHeads(n_head, n_kv_head, head_dim));
  KILN_RETURN_IF_ERROR(RequireFloating(qkv, "qkv"));
  KILN_RETURN_IF_ERROR(RequireRank(qkv, 3, "qkv"));
  return RequireLastDim(qkv, static_cast<int64_t>(n_head + 2 * n_kv_head) * head_dim, "qkv",
                        "(n_head + 2 * n_kv_head) * head_dim");
}

absl::StatusOr<Types> InferRope(const Types& in, const std::any& attrs) {
  const auto& a = std::any_cast<const RopeAttrs&>(attrs);
  KILN_RETURN_IF_ERROR(CheckQkv(in[0], a.n_head, a.n_kv_head, a.head_dim));
  if (a.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim ", a.head_dim, " must be even for rope"));
  }
  return Types{in[0]};
}

std::vector<ValueId> RopeGrad(GradContext& ctx) {
  RopeAttrs inverse = ctx.attrs<RopeAttrs>();
  inverse.inverse = !inverse.inverse;
  return {Rope(ctx.b, ctx.grad_output(0), inverse)};
}

absl::StatusOr<Types> InferAttention(const Types& in, const std::any& attrs) {
  const auto& a = std::any_cast<const AttentionAttrs&>(attrs);
  KILN_RETURN_IF_ERROR(CheckQkv(in[0], a.n_head, a.n_kv_head, a.head_dim));
  const int64_t b = in[0].shape[0], t = in[0].shape[1];
  return Types{{{b, t, static_cast<int64_t>(a.n_head) * a.head_dim}, in[0].dtype},
               {{b, a.n_head, t}, DType::kF32}};
}

absl::StatusOr<Types> InferAttentionBackward(const Types& in, const std::any& attrs) {
  // dout, qkv, out, lse
  KILN_ASSIGN_OR_RETURN(Types fwd, InferAttention({in[1]}, attrs));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[0], "dout", fwd[0], "attention output"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[2], "out", fwd[0], "attention output"));
  KILN_RETURN_IF_ERROR(RequireSameShape(in[3], "lse", fwd[1], "attention lse"));
  return Types{in[1]};
}

std::vector<ValueId> AttentionGrad(GradContext& ctx) {
  return {ctx.b.Apply1("attention_backward",
                       {ctx.grad_output(0), ctx.input(0), ctx.output(0), ctx.output(1)},
                       ctx.raw_attrs())};
}

struct Registration {
  Registration() {
    auto& r = graph::OpRegistry::Global();
    OpSchema rope;
    rope.name = "rope";
    rope.input_names = {"qkv"};
    rope.infer = InferRope;
    rope.grad = RopeGrad;
    rope.inplace_input = 0;
    r.Register(rope);

    OpSchema attention;
    attention.name = "attention";
    attention.input_names = {"qkv"};
    attention.num_outputs = 2;
    attention.infer = InferAttention;
    attention.grad = AttentionGrad;
    r.Register(attention);

    OpSchema backward;
    backward.name = "attention_backward";
    backward.input_names = {"dout", "qkv", "out", "lse"};
    backward.infer = InferAttentionBackward;
    r.Register(backward);
  }
} registration;

}  // namespace

ValueId Rope(graph::GraphBuilder& b, ValueId qkv, const RopeAttrs& attrs) {
  return b.Apply1("rope", {qkv}, attrs);
}

ValueId Attention(graph::GraphBuilder& b, ValueId qkv, const AttentionAttrs& attrs) {
  return b.Apply("attention", {qkv}, attrs)[0];
}

}  // namespace kiln::ops
