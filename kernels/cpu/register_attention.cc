// CPU kernels of the transformer ops on packed qkv (engine/ops/attrs/attention.h): rope (tables
// built in Prepare), fused attention and its backward (per-thread tiles from the workspace).
#include <cmath>
#include <vector>

#include "engine/core/parallel.h"
#include "engine/ops/attrs/attention.h"
#include "kernels/cpu/attention_layout.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// Checks that t is (B, T, width) for the given head layout.
void CheckPacked(const Tensor& t, int64_t width, std::string_view what) {
  KILN_CHECK(t.dim() == 3 && t.size(2) == width)
      << what << " must be (B, T, " << width << "), got " << ShapeToString(t.sizes());
}

// rope(qkv) -> qkv'. May run in place (output aliases input).
class RopeKernel final : public Kernel {
 public:
  absl::Status Prepare(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    if (attrs.head_dim % 2 != 0 || attrs.n_kv_head <= 0 || attrs.n_head % attrs.n_kv_head != 0) {
      return absl::InvalidArgumentError(
          "rope: head_dim must be even, n_head a multiple of n_kv_head");
    }
    const Tensor& x = ctx.input(0);
    CheckPacked(x, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
                "rope qkv");
    const int64_t seq = x.size(1), half = attrs.head_dim / 2;
    // Note [RoPE tables]: computed in f32 the way Hugging Face does: inv_freq[i] =
    // 1 / theta^(2i / D), angle = t * inv_freq[i] rounded to f32, then cos / sin of that angle.
    cos_.resize(static_cast<size_t>(seq * half));
    sin_.resize(cos_.size());
    for (int64_t i = 0; i < half; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(attrs.head_dim);
      const float inv_freq = 1.0f / std::pow(attrs.theta, exponent);
      for (int64_t t = 0; t < seq; ++t) {
        const float angle = static_cast<float>(t) * inv_freq;
        cos_[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sin_[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    }
    return absl::OkStatus();
  }

  void Run(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    const Tensor& x = ctx.input(0);   // (B, T, (H + 2 Hkv) D)
    const Tensor& y = ctx.output(0);  // (B, T, (H + 2 Hkv) D)
    CheckTensor(y, x.dtype(), "rope output");
    CheckSameShape(x, y, "rope");
    KILN_CHECK_EQ(static_cast<int64_t>(cos_.size()), x.size(1) * (attrs.head_dim / 2))
        << "rope ran before Prepare or with another T";
    RopeArgs args;
    args.dtype = x.dtype();
    args.x = x.raw_data();
    args.y = y.raw_data();
    args.batch = x.size(0);
    args.seq = x.size(1);
    args.n_head = attrs.n_head;
    args.n_kv_head = attrs.n_kv_head;
    args.head_dim = attrs.head_dim;
    args.cos = cos_.data();
    args.sin = sin_.data();
    args.inverse = attrs.inverse;
    Isa().rope(args);
  }

 private:
  std::vector<float> cos_;  // (T, D/2)
  std::vector<float> sin_;  // (T, D/2)
};

// The fields of AttentionArgs that come from the attributes and qkv's shape.
AttentionArgs AttentionGeometry(const KernelContext& ctx, const Tensor& qkv) {
  const auto& attrs = ctx.attrs_as<ops::AttentionAttrs>();
  KILN_CHECK(attrs.n_kv_head > 0 && attrs.n_head % attrs.n_kv_head == 0 && attrs.head_dim > 0)
      << "attention: n_head " << attrs.n_head << " must be a multiple of n_kv_head "
      << attrs.n_kv_head;
  CheckPacked(qkv, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
              "attention qkv");
  AttentionArgs args;
  args.dtype = qkv.dtype();
  args.batch = qkv.size(0);
  args.seq = qkv.size(1);
  args.n_head = attrs.n_head;
  args.n_kv_head = attrs.n_kv_head;
  args.head_dim = attrs.head_dim;
  args.causal = attrs.causal;
  args.scale =
      attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(attrs.head_dim));
  args.qkv = qkv.raw_data();
  return args;
}

// attention(qkv) -> (out, lse) (kBackward = false);
// attention_backward(dout, qkv, out, lse) -> dqkv (kBackward = true).
template <bool kBackward>
class AttentionKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const auto& attrs = ctx.attrs_as<ops::AttentionAttrs>();
    const Tensor& qkv = ctx.input(kBackward ? 1 : 0);
    return MakeAttentionLayout(qkv.size(1), attrs.head_dim, kBackward).BytesPerThread() *
           static_cast<size_t>(NumThreads());
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& qkv = ctx.input(kBackward ? 1 : 0);
    AttentionArgs args = AttentionGeometry(ctx, qkv);
    const Shape out_shape{args.batch, args.seq, int64_t{args.n_head} * args.head_dim};
    const Shape lse_shape{args.batch, args.n_head, args.seq};
    const Tensor& out = kBackward ? ctx.input(2) : ctx.output(0);
    const Tensor& lse = kBackward ? ctx.input(3) : ctx.output(1);
    CheckTensor(qkv, qkv.dtype(), "attention qkv");
    CheckTensor(out, qkv.dtype(), "attention out");
    CheckTensor(lse, DType::kF32, "attention lse");
    KILN_CHECK(out.sizes() == out_shape) << "attention out " << ShapeToString(out.sizes());
    KILN_CHECK(lse.sizes() == lse_shape) << "attention lse " << ShapeToString(lse.sizes());
    args.out = out.raw_data();
    args.lse = lse.data<float>();
    args.workspace = ctx.workspace;
    args.workspace_bytes = ctx.workspace_bytes;
    if (args.batch == 0 || args.seq == 0) return;
    if constexpr (kBackward) {
      const Tensor& dout = ctx.input(0);
      const Tensor& dqkv = ctx.output(0);
      CheckTensor(dout, qkv.dtype(), "attention_backward dout");
      CheckTensor(dqkv, qkv.dtype(), "attention_backward dqkv");
      CheckSameShape(dout, out, "attention_backward dout");
      CheckSameShape(dqkv, qkv, "attention_backward dqkv");
      args.dout = dout.raw_data();
      args.dqkv = dqkv.raw_data();
      Isa().attention_backward(args);
    } else {
      Isa().attention(args);
    }
  }
};

}  // namespace

KILN_REGISTER_KERNEL("rope", kCPU, kF32, RopeKernel);
KILN_REGISTER_KERNEL("rope", kCPU, kBF16, RopeKernel);
KILN_REGISTER_KERNEL("rope", kCPU, kF16, RopeKernel);
KILN_REGISTER_KERNEL("attention", kCPU, kF32, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention", kCPU, kBF16, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention", kCPU, kF16, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention_backward", kCPU, kF32, AttentionKernel<true>);
KILN_REGISTER_KERNEL("attention_backward", kCPU, kBF16, AttentionKernel<true>);
KILN_REGISTER_KERNEL("attention_backward", kCPU, kF16, AttentionKernel<true>);

}  // namespace kiln::kernels::cpu
