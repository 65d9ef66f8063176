// CPU kernels of the transformer ops on packed qkv (engine/ops/attrs/attention.h): rope (tables
// built in Prepare), fused attention and its backward (per-thread tiles from the workspace).
#include <cmath>
#include <vector>

#include "engine/core/parallel.h"
#include "engine/ops/attrs/attention.h"
#include "kernels/common/bind_args.h"
#include "kernels/cpu/attention_layout.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// rope(qkv) -> qkv'. May run in place (output aliases input).
class RopeKernel final : public Kernel {
 public:
  absl::Status Prepare(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    KILN_RETURN_IF_ERROR(CheckRopeAttrs(attrs));
    const Tensor& x = ctx.input(0);
    CheckPacked(x, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
                "rope qkv");
    BuildRopeTables(attrs, x.size(1), &cos_, &sin_);  // Note [RoPE tables] (kernels/common)
    return absl::OkStatus();
  }

  void Run(const KernelContext& ctx) override {
    const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
    const Tensor& x = ctx.input(0);   // (B, T, (H + 2 Hkv) D)
    const Tensor& y = ctx.output(0);  // (B, T, (H + 2 Hkv) D)
    CheckRope(ctx, DeviceType::kCPU);
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
    AttentionArgs args;
    BindAttention<kBackward>(ctx, DeviceType::kCPU, args);
    args.dtype = ctx.input(kBackward ? 1 : 0).dtype();
    args.workspace = ctx.workspace;
    args.workspace_bytes = ctx.workspace_bytes;
    if (args.batch == 0 || args.seq == 0) return;
    if constexpr (kBackward) {
      Isa().attention_backward(args);
    } else {
      Isa().attention(args);
    }
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNELS("rope", kCPU, RopeKernel);
KILN_REGISTER_FLOAT_KERNELS("attention", kCPU, AttentionKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("attention_backward", kCPU, AttentionKernel<true>);

}  // namespace kiln::kernels::cpu
