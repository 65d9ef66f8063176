// CUDA kernels of the transformer ops on packed qkv (engine/ops/attrs/attention.h): rope (tables
// built on the host in Prepare exactly as the CPU builds them, then uploaded) and the fused
// attention forward and backward of attention.cu.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops/attrs/attention.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

void CheckPacked(const Tensor& t, int64_t width, std::string_view what) {
  KILN_CHECK(t.dim() == 3 && t.size(2) == width)
      << what << " must be (B, T, " << width << "), got " << ShapeToString(t.sizes());
}

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
    // Note [RoPE tables] (kernels/cpu/register_attention.cc): the same f32 angles on the host.
    std::vector<float> cos(static_cast<size_t>(seq * half)), sin(cos.size());
    for (int64_t i = 0; i < half; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(attrs.head_dim);
      const float inv_freq = 1.0f / std::pow(attrs.theta, exponent);
      for (int64_t t = 0; t < seq; ++t) {
        const float angle = static_cast<float>(t) * inv_freq;
        cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    }
    cos_ = Tensor::Zeros({seq, half}, DType::kF32, x.device());  // (T, D/2)
    sin_ = Tensor::Zeros({seq, half}, DType::kF32, x.device());  // (T, D/2)
    cos_.CopyFrom(Tensor::FromFloats(cos, {seq, half}));
    sin_.CopyFrom(Tensor::FromFloats(sin, {seq, half}));
    return absl::OkStatus();
  }

  void Run(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    const Tensor& x = ctx.input(0);   // (B, T, (H + 2 Hkv) D)
    const Tensor& y = ctx.output(0);  // (B, T, (H + 2 Hkv) D)
    CheckTensor(x, x.dtype(), "rope input");
    CheckTensor(y, x.dtype(), "rope output");
    CheckSameShape(x, y, "rope");
    KILN_CHECK(cos_.defined() && cos_.size(0) == x.size(1))
        << "rope ran before Prepare or with another T";
    LaunchRope(ToFloatType(x.dtype()), x.raw_data(), y.raw_data(), x.size(0), x.size(1),
               attrs.n_head, attrs.n_kv_head, attrs.head_dim, cos_.data<float>(),
               sin_.data<float>(), attrs.inverse, LaunchStreamFor(x));
  }

 private:
  Tensor cos_, sin_;
};

template <bool kBackward>
class AttentionKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    if (!kBackward) return 0;
    const Tensor& qkv = ctx.input(1);
    return AttentionBackwardWorkspaceBytes(qkv.size(0), ctx.attrs_as<ops::AttentionAttrs>().n_head,
                                           qkv.size(1));
  }

  absl::Status Prepare(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::AttentionAttrs>();
    if (attrs.head_dim > kMaxAttentionHeadDim) {
      return absl::UnimplementedError(absl::StrCat("CUDA attention supports head_dim up to ",
                                                   kMaxAttentionHeadDim, ", got ", attrs.head_dim));
    }
    return absl::OkStatus();
  }

  void Run(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::AttentionAttrs>();
    const Tensor& qkv = ctx.input(kBackward ? 1 : 0);
    KILN_CHECK(attrs.n_kv_head > 0 && attrs.n_head % attrs.n_kv_head == 0 && attrs.head_dim > 0)
        << "attention: n_head " << attrs.n_head << " must be a multiple of n_kv_head "
        << attrs.n_kv_head;
    CheckTensor(qkv, qkv.dtype(), "attention qkv");
    CheckPacked(qkv, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
                "attention qkv");
    AttentionLaunch a;
    a.type = ToFloatType(qkv.dtype());
    a.batch = qkv.size(0);
    a.seq = qkv.size(1);
    a.n_head = attrs.n_head;
    a.n_kv_head = attrs.n_kv_head;
    a.head_dim = attrs.head_dim;
    a.causal = attrs.causal;
    a.scale =
        attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(attrs.head_dim));
    a.qkv = qkv.raw_data();
    const Shape out_shape{a.batch, a.seq, int64_t{a.n_head} * a.head_dim};
    const Shape lse_shape{a.batch, a.n_head, a.seq};
    const Tensor& out = kBackward ? ctx.input(2) : ctx.output(0);
    const Tensor& lse = kBackward ? ctx.input(3) : ctx.output(1);
    CheckTensor(out, qkv.dtype(), "attention out");
    CheckTensor(lse, DType::kF32, "attention lse");
    KILN_CHECK(out.sizes() == out_shape) << "attention out " << ShapeToString(out.sizes());
    KILN_CHECK(lse.sizes() == lse_shape) << "attention lse " << ShapeToString(lse.sizes());
    a.out = out.raw_data();
    a.lse = lse.data<float>();
    if constexpr (kBackward) {
      const Tensor& dout = ctx.input(0);
      const Tensor& dqkv = ctx.output(0);
      CheckTensor(dout, qkv.dtype(), "attention_backward dout");
      CheckTensor(dqkv, qkv.dtype(), "attention_backward dqkv");
      CheckSameShape(dout, out, "attention_backward dout");
      CheckSameShape(dqkv, qkv, "attention_backward dqkv");
      KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "attention_backward workspace";
      a.dout = dout.raw_data();
      a.dqkv = dqkv.raw_data();
      LaunchAttentionBackward(a, ctx.workspace, LaunchStreamFor(qkv));
    } else {
      LaunchAttentionForward(a, LaunchStreamFor(qkv));
    }
  }
};

}  // namespace

KILN_REGISTER_KERNEL("rope", kCUDA, kF32, RopeKernel);
KILN_REGISTER_KERNEL("rope", kCUDA, kBF16, RopeKernel);
KILN_REGISTER_KERNEL("rope", kCUDA, kF16, RopeKernel);
KILN_REGISTER_KERNEL("attention", kCUDA, kF32, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention", kCUDA, kBF16, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention", kCUDA, kF16, AttentionKernel<false>);
KILN_REGISTER_KERNEL("attention_backward", kCUDA, kF32, AttentionKernel<true>);
KILN_REGISTER_KERNEL("attention_backward", kCUDA, kBF16, AttentionKernel<true>);
KILN_REGISTER_KERNEL("attention_backward", kCUDA, kF16, AttentionKernel<true>);

}  // namespace kiln::kernels::cuda
