// Binds a node's checked tensors to a backend's launch arguments, once for every backend: the CPU's
// argument structs (kernels/cpu/isa_api.h) and CUDA's (kernels/cuda/launch.h) name their pointer
// and size fields alike, so one template fills either. See Note [One binding for every backend].
#pragma once

#include "engine/core/kernel.h"
#include "engine/ops/attrs/norm.h"
#include "kernels/common/contracts.h"

namespace kiln::kernels {

// Note [One binding for every backend]
// The argument structs stay separate per backend: CUDA's are included by nvcc-compiled files and
// carry their element type as a plain FloatType, the CPU's as DType, and each has fields only it
// needs (the CPU's per-thread workspace, say). What must not differ is which tensor of the node
// goes to which field, so that is written once here: each Bind* runs the op's shared contract
// check, fills every common field, and leaves the element type and backend-only fields to the
// caller.

// layer_norm(x, gamma, beta) -> (y, mean, rstd); rms_norm(x, gamma) -> (y, rstd).
template <bool kRms, typename Args>
void BindNorm(const KernelContext& ctx, DeviceType device, Args& a) {
  CheckNorm(ctx, device, kRms);
  const Tensor& x = ctx.input(0);  // (..., C)
  a.rms = kRms;
  a.x = x.raw_data();
  a.gamma = ctx.input(1).data<float>();             // (C)
  a.y = ctx.output(0).raw_data();                   // (..., C)
  a.rstd = ctx.output(kRms ? 1 : 2).data<float>();  // (rows)
  a.rows = Rows(x);
  a.cols = LastDim(x);
  a.eps = ctx.attrs_as<ops::NormAttrs>().eps;
  if constexpr (!kRms) {
    a.beta = ctx.input(2).data<float>();   // (C)
    a.mean = ctx.output(1).data<float>();  // (rows)
  }
}

// layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta);
// rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma).
template <bool kRms, typename Args>
void BindNormBackward(const KernelContext& ctx, DeviceType device, Args& a) {
  CheckNormBackward(ctx, device, kRms);
  const Tensor& x = ctx.input(1);  // (..., C)
  a.rms = kRms;
  a.dy = ctx.input(0).raw_data();  // (..., C)
  a.x = x.raw_data();
  a.gamma = ctx.input(2).data<float>();            // (C)
  a.rstd = ctx.input(kRms ? 3 : 4).data<float>();  // (rows)
  a.dx = ctx.output(0).raw_data();                 // (..., C)
  a.dgamma = ctx.output(1).data<float>();          // (C)
  a.rows = Rows(x);
  a.cols = LastDim(x);
  if constexpr (!kRms) {
    a.mean = ctx.input(3).data<float>();    // (rows)
    a.dbeta = ctx.output(2).data<float>();  // (C)
  }
  // layer_norm_backward_add / rms_norm_backward_add: the residual gradient, (..., C).
  const int residual_input = kRms ? 4 : 5;
  a.residual = ctx.num_inputs > residual_input ? ctx.input(residual_input).raw_data() : nullptr;
}

// attention(qkv) -> (out, lse); attention_backward(dout, qkv, out, lse) -> dqkv.
template <bool kBackward, typename Args>
void BindAttention(const KernelContext& ctx, DeviceType device, Args& a) {
  const AttentionGeometry g = CheckAttention(ctx, device, kBackward);
  a.batch = g.batch;
  a.seq = g.seq;
  a.n_head = g.n_head;
  a.n_kv_head = g.n_kv_head;
  a.head_dim = g.head_dim;
  a.causal = g.causal;
  a.scale = g.scale;
  a.qkv = ctx.input(kBackward ? 1 : 0).raw_data();                   // (B, T, (H+2Hkv) D)
  a.out = (kBackward ? ctx.input(2) : ctx.output(0)).raw_data();     // (B, T, H D)
  a.lse = (kBackward ? ctx.input(3) : ctx.output(1)).data<float>();  // (B, H, T)
  if constexpr (kBackward) {
    a.dout = ctx.input(0).raw_data();   // (B, T, H D)
    a.dqkv = ctx.output(0).raw_data();  // (B, T, (H+2Hkv) D)
  }
}

}  // namespace kiln::kernels
