// Layer norm and RMS norm CUDA kernels, forward and backward, over the last axis. One block per
// row in the forward; the backward's dgamma / dbeta are per-row-block partials combined in a fixed
// order (Note [Deterministic reductions on the device] in reduce.cu). Statistics are f32.
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxRowBlocks = 512;

int64_t RowBlocks(int64_t rows) {
  int64_t count = (rows + 7) / 8;
  if (count > kMaxRowBlocks) count = kMaxRowBlocks;
  return count < 1 ? 1 : count;
}

// Note [RMS norm rounding] (kernels/cpu/norm.cc): x * rstd is rounded to T before gamma.
template <typename T, bool kRms>
__global__ void norm_forward_kernel(const T* x, const float* gamma, const float* beta, T* y,
                                    float* mean_out, float* rstd_out, int64_t cols, float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * cols;
  T* yr = y + r * cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  if constexpr (kRms) {
    float sum_sq = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float v = Load(xr + i);
      sum_sq = fmaf(v, v, sum_sq);
    }
    sum_sq = BlockSum(sum_sq);
    const float rstd = 1.0f / sqrtf(sum_sq * inv_cols + eps);
    if (threadIdx.x == 0) rstd_out[r] = rstd;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      Store(yr + i, RoundTo<T>(Load(xr + i) * rstd) * gamma[i]);
    }
  } else {
    float sum = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum += Load(xr + i);
    const float mean = BlockSum(sum) * inv_cols;
    float sq = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float d = Load(xr + i) - mean;
      sq = fmaf(d, d, sq);
    }
    const float rstd = 1.0f / sqrtf(BlockSum(sq) * inv_cols + eps);
    if (threadIdx.x == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      Store(yr + i, fmaf((Load(xr + i) - mean) * rstd, gamma[i], beta[i]));
    }
  }
}

// Block b handles rows [b * per_block, ...): dx per row, and its partial dgamma / dbeta rows in
// the workspace (each column owned by one thread, rows added in order).
template <typename T, bool kRms>
__global__ void norm_backward_kernel(const T* dy, const T* x, const float* gamma, const float* mean,
                                     const float* rstd, T* dx, int64_t rows, int64_t cols,
                                     int64_t per_block, float* partials) {
  float* part_gamma = partials + blockIdx.x * 2 * cols;
  float* part_beta = part_gamma + cols;
  for (int64_t i = threadIdx.x; i < 2 * cols; i += blockDim.x) part_gamma[i] = 0.0f;
  __syncthreads();  // a beta column may be zeroed by another thread than the one that adds to it
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const int64_t r0 = blockIdx.x * per_block;
  const int64_t r1 = r0 + per_block < rows ? r0 + per_block : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const T* dyr = dy + r * cols;
    const T* xr = x + r * cols;
    const float rs = rstd[r];
    const float m = kRms ? 0.0f : mean[r];
    float sum_g = 0, sum_gx = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float d = Load(dyr + i);
      const float xhat = (Load(xr + i) - m) * rs;
      const float g = d * gamma[i];
      sum_gx = fmaf(g, xhat, sum_gx);
      part_gamma[i] = fmaf(d, kRms ? RoundTo<T>(xhat) : xhat, part_gamma[i]);
      if (!kRms) {
        sum_g += g;
        part_beta[i] += d;
      }
    }
    const float mean_g = kRms ? 0.0f : BlockSum(sum_g) * inv_cols;
    const float mean_gx = BlockSum(sum_gx) * inv_cols;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float xhat = (Load(xr + i) - m) * rs;
      const float g = Load(dyr + i) * gamma[i];
      Store(dx + r * cols + i, rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

__global__ void norm_params_combine_kernel(const float* partials, int64_t blocks, int64_t cols,
                                           float* dgamma, float* dbeta) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  float g = 0, b = 0;
  for (int64_t k = 0; k < blocks; ++k) {
    g += partials[k * 2 * cols + c];
    b += partials[k * 2 * cols + cols + c];
  }
  dgamma[c] = g;
  if (dbeta != nullptr) dbeta[c] = b;
}

}  // namespace

void LaunchNorm(const NormLaunch& a, StreamPtr stream) {
  if (a.rows == 0 || a.cols == 0) return;
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const unsigned grid = static_cast<unsigned>(a.rows);
    if (a.rms) {
      Launch(norm_forward_kernel<T, true>, grid, kThreads, 0, AsStream(stream), x, a.gamma, nullptr,
             y, nullptr, a.rstd, a.cols, a.eps);
    } else {
      Launch(norm_forward_kernel<T, false>, grid, kThreads, 0, AsStream(stream), x, a.gamma, a.beta,
             y, a.mean, a.rstd, a.cols, a.eps);
    }
  });
  KILN_CUDA_CHECK_LAUNCH();
}

size_t NormBackwardWorkspaceBytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>(RowBlocks(rows) * 2 * cols) * sizeof(float);
}

void LaunchNormBackward(const NormLaunch& a, void* workspace, StreamPtr stream) {
  if (a.cols == 0) return;
  const int64_t blocks = RowBlocks(a.rows);
  const int64_t per_block = a.rows == 0 ? 1 : (a.rows + blocks - 1) / blocks;
  float* partials = static_cast<float*>(workspace);
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    const T* dy = static_cast<const T*>(a.dy);
    const T* x = static_cast<const T*>(a.x);
    T* dx = static_cast<T*>(a.dx);
    const unsigned grid = static_cast<unsigned>(blocks);
    if (a.rms) {
      Launch(norm_backward_kernel<T, true>, grid, kThreads, 0, AsStream(stream), dy, x, a.gamma,
             nullptr, a.rstd, dx, a.rows, a.cols, per_block, partials);
    } else {
      Launch(norm_backward_kernel<T, false>, grid, kThreads, 0, AsStream(stream), dy, x, a.gamma,
             a.mean, a.rstd, dx, a.rows, a.cols, per_block, partials);
    }
  });
  Launch(norm_params_combine_kernel, static_cast<unsigned>((a.cols + 255) / 256), 256, 0,
         AsStream(stream), partials, blocks, a.cols, a.dgamma, a.rms ? nullptr : a.dbeta);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
