// Fused AdamW over flat buffers on the device: one pass over (master f32, grads any float type,
// moments f32, and the optional low-precision copy of the weights), every parameter segment in
// one launch of one block per chunk of at most kAdamChunkElements elements (Note [AdamW chunks]).
// Same arithmetic as engine/optim's AdamW.
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename G, typename P>
__global__ void adamw_kernel(AdamLaunch a) {
  const AdamChunk chunk = a.chunks[blockIdx.x];
  const float decay = chunk.weight_decay ? 1.0f - a.lr_weight_decay : 1.0f;
  const G* grads = static_cast<const G*>(a.grads) + chunk.offset;
  P* params = a.params != nullptr ? static_cast<P*>(a.params) + chunk.offset : nullptr;
  float* master = a.master + chunk.offset;
  float* m = a.exp_avg + chunk.offset;  // Note [Device AdamW state layout]
  float* v = a.exp_avg_sq + chunk.offset;
  for (int i = threadIdx.x; i < chunk.length; i += blockDim.x) {
    const float g = Load(grads + i) * a.grad_scale;
    const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * g;
    const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float p = master[i] * decay - a.step_size * mi / (sqrtf(vi) * a.inv_bc2_sqrt + a.eps);
    master[i] = p;
    if (params != nullptr) Store(params + i, p);
  }
}

}  // namespace

void LaunchAdamW(const AdamLaunch& a, StreamPtr stream) {
  if (a.num_chunks == 0) return;
  const dim3 grid(static_cast<unsigned>(a.num_chunks));  // <= kMaxGridX: MakeAdamTable checks
  DispatchFloat(a.grad_type, [&](auto g) {
    using G = decltype(g);
    if (a.params == nullptr) {
      Launch(adamw_kernel<G, float>, grid, kThreads, 0, AsStream(stream), a);
    } else {
      DispatchFloat(a.param_type, [&](auto p) {
        Launch(adamw_kernel<G, decltype(p)>, grid, kThreads, 0, AsStream(stream), a);
      });
    }
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
