// CUDA kernels of the transformer ops on packed qkv (engine/ops/attrs/attention.h): rope (tables
// built on the host in Prepare exactly as the CPU builds them, then uploaded) and the fused
// attention forward and backward of attention.cu.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops/attrs/attention.h"
#include "kernels/common/bind_args.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

class RopeKernel final : public Kernel {
 public:
  absl::Status Prepare(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    KILN_RETURN_IF_ERROR(CheckRopeAttrs(attrs));
    const Tensor& x = ctx.input(0);
    CheckPacked(x, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
                "rope qkv");
    const int64_t seq = x.size(1), half = attrs.head_dim / 2;
    // Note [RoPE tables] (kernels/common/contracts.h): the CPU's tables, uploaded.
    std::vector<float> cos, sin;
    BuildRopeTables(attrs, seq, &cos, &sin);
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
    CheckRope(ctx, DeviceType::kCUDA);
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
    const Tensor& qkv = ctx.input(kBackward ? 1 : 0);  // (B, T, (H + 2 Hkv) D)
    AttentionLaunch a;
    BindAttention<kBackward>(ctx, DeviceType::kCUDA, a);
    a.type = ToFloatType(qkv.dtype());
    if constexpr (kBackward) {
      KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "attention_backward workspace";
      LaunchAttentionBackward(a, ctx.workspace, LaunchStreamFor(qkv));
    } else {
      LaunchAttentionForward(a, LaunchStreamFor(qkv));
    }
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNELS("rope", kCUDA, RopeKernel);
KILN_REGISTER_FLOAT_KERNELS("attention", kCUDA, AttentionKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("attention_backward", kCUDA, AttentionKernel<true>);

}  // namespace kiln::kernels::cuda
