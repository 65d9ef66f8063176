// Fused AdamW over flat buffers on the device: one pass over (master f32, grads any float type,
// moments f32, and the optional low-precision copy of the weights), every parameter segment in
// one launch of one block per chunk of at most kAdamChunkElements elements (Note [AdamW chunks]),
// 16-byte packs where aligned. Same arithmetic as engine/optim's AdamW.
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kAdamPack = Pack<float>::kSize;  // 4: master and moments move 16 bytes a lane

// Updates elements [i, i + kV) of the chunk whose pointers are given (Note [Packed 16-byte
// accesses]: with kV == kAdamPack the f32 buffers move one pack, a bf16 gradient or weight copy 8
// bytes; the arithmetic per element is the same for every kV).
template <int kV, typename G, typename P>
__device__ __forceinline__ void AdamWUpdate(const AdamLaunch& a, float decay, const G* grads,
                                            float* master, float* m, float* v, P* params, int i) {
  float g[kV], mi[kV], vi[kV], p[kV];
  LoadElements(grads + i, g);
  LoadElements(m + i, mi);
  LoadElements(v + i, vi);
  LoadElements(master + i, p);
#pragma unroll
  for (int k = 0; k < kV; ++k) {
    const float gk = g[k] * a.grad_scale;
    mi[k] = a.beta1 * mi[k] + (1.0f - a.beta1) * gk;
    vi[k] = a.beta2 * vi[k] + (1.0f - a.beta2) * gk * gk;
    p[k] = p[k] * decay - a.step_size * mi[k] / (sqrtf(vi[k]) * a.inv_bc2_sqrt + a.eps);
  }
  StoreElements(m + i, mi);
  StoreElements(v + i, vi);
  StoreElements(master + i, p);
  if (params != nullptr) StoreElements(params + i, p);
}

// kV == kAdamPack when every base pointer is 16-byte aligned (LaunchAdamW); a chunk then moves in
// groups when its offset is a multiple of the group, and its last length % kV elements one by one.
template <typename G, typename P, int kV>
__global__ void adamw_kernel(AdamLaunch a) {
  const AdamChunk chunk = a.chunks[blockIdx.x];
  const float decay = chunk.weight_decay ? 1.0f - a.lr_weight_decay : 1.0f;
  const G* grads = static_cast<const G*>(a.grads) + chunk.offset;
  P* params = a.params != nullptr ? static_cast<P*>(a.params) + chunk.offset : nullptr;
  float* master = a.master + chunk.offset;
  float* m = a.exp_avg + chunk.offset;  // Note [Device AdamW state layout]
  float* v = a.exp_avg_sq + chunk.offset;
  int grouped = 0;
  if constexpr (kV > 1) {
    if (chunk.offset % kV == 0) {
      grouped = chunk.length / kV * kV;
      for (int i = threadIdx.x * kV; i < grouped; i += blockDim.x * kV) {
        AdamWUpdate<kV>(a, decay, grads, master, m, v, params, i);
      }
    }
  }
  for (int i = grouped + threadIdx.x; i < chunk.length; i += blockDim.x) {
    AdamWUpdate<1>(a, decay, grads, master, m, v, params, i);
  }
}

}  // namespace

void LaunchAdamW(const AdamLaunch& a, StreamPtr stream) {
  if (a.num_chunks == 0) return;
  const dim3 grid(static_cast<unsigned>(a.num_chunks));  // <= kMaxGridX: MakeAdamTable checks
  const bool packed = Aligned16({a.master, a.grads, a.params, a.exp_avg, a.exp_avg_sq});
  DispatchFloat(a.grad_type, [&](auto g) {
    using G = decltype(g);
    const auto launch = [&](auto p) {
      using P = decltype(p);
      const auto kernel = packed ? adamw_kernel<G, P, kAdamPack> : adamw_kernel<G, P, 1>;
      Launch(kernel, grid, kThreads, 0, AsStream(stream), a);
    };
    if (a.params == nullptr) {
      launch(float{});
    } else {
      DispatchFloat(a.param_type, launch);
    }
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
