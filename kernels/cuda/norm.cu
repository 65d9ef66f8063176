// Layer norm and RMS norm CUDA kernels, forward and backward, over the last axis. One block per
// row in the forward; the backward's dgamma / dbeta are per-row-block partials summed by column
// in a fixed order (Note [Deterministic reductions on the device] in reduce.cu). Statistics are
// f32. See Note [Norm kernels on the device].
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxRowBlocks = 2048;
constexpr int64_t kMinBlockRows = 4;
constexpr size_t kMaxSharedPartialBytes = 48 * 1024;  // the default dynamic shared-memory limit

int64_t RowBlocks(int64_t rows) {
  int64_t count = (rows + kMinBlockRows - 1) / kMinBlockRows;
  if (count > kMaxRowBlocks) count = kMaxRowBlocks;
  return count < 1 ? 1 : count;
}

// Note [Norm kernels on the device]
// Rows move in kV-element groups (Note [Packed 16-byte accesses]: a pack when cols and the buffers
// allow, else single elements); thread i takes groups i, i + blockDim, ... of every row, so a
// thread rereads only what it loaded itself (its L1 lines) in the later passes over a row. The
// backward runs many small row blocks (4 rows each, up to 2048 blocks: a block walks its rows one
// after another, so the device is kept busy by blocks, not by rows); each accumulates its partial
// dgamma / dbeta rows in shared memory when they fit (each column owned by one thread, so no
// barrier between rows), else in the workspace, and writes them as rows of two (blocks, cols)
// matrices that sum_to's column sums reduce in block order (Note [Column sums] in reduce.cu).

// gamma / beta (f32) as kV elements.
template <int kV>
__device__ __forceinline__ void LoadParams(const float* p, float (&v)[kV]) {
#pragma unroll
  for (int k = 0; k < kV; ++k) v[k] = p[k];
}

// Group j of a row of dy and x, and of gamma.
template <typename T, int kV>
__device__ __forceinline__ void LoadBackwardGroup(const T* dyr, const T* xr, const float* gamma,
                                                  int64_t j, float (&d)[kV], float (&xv)[kV],
                                                  float (&g)[kV]) {
  LoadElements(dyr + j * kV, d);
  LoadElements(xr + j * kV, xv);
  LoadParams(gamma + j * kV, g);
}

// Note [RMS norm rounding] (kernels/cpu/norm.cc): x * rstd is rounded to T before gamma.
template <typename T, bool kRms, int kV>
__global__ void norm_forward_kernel(const T* x, const float* gamma, const float* beta, T* y,
                                    float* mean_out, float* rstd_out, int64_t cols, float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * cols;
  T* yr = y + r * cols;
  const int64_t groups = cols / kV;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float mean = 0.0f;
  if constexpr (!kRms) {
    float sum = 0;
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
      float v[kV];
      LoadElements(xr + j * kV, v);
#pragma unroll
      for (int k = 0; k < kV; ++k) sum += v[k];
    }
    mean = BlockSum(sum) * inv_cols;
  }
  float sq = 0;
  for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
    float v[kV];
    LoadElements(xr + j * kV, v);
#pragma unroll
    for (int k = 0; k < kV; ++k) sq = fmaf(v[k] - mean, v[k] - mean, sq);
  }
  const float rstd = 1.0f / sqrtf(BlockSum(sq) * inv_cols + eps);
  if (threadIdx.x == 0) {
    if (!kRms) mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
  for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
    float v[kV], g[kV], b[kV];
    LoadElements(xr + j * kV, v);
    LoadParams(gamma + j * kV, g);
    if constexpr (!kRms) LoadParams(beta + j * kV, b);
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      v[k] = kRms ? RoundTo<T>(v[k] * rstd) * g[k] : fmaf((v[k] - mean) * rstd, g[k], b[k]);
    }
    StoreElements(yr + j * kV, v);
  }
}

// Block b handles rows [b * per_block, ...): dx per row, and row b of the partial dgamma and
// dbeta matrices (partials: (blocks, cols) each, one after the other), accumulated in dynamic
// shared memory when shared_partials, else in place; each column owned by one thread and its rows
// added in order.
template <typename T, bool kRms, int kV>
__global__ void norm_backward_kernel(const T* dy, const T* x, const float* gamma, const float* mean,
                                     const float* rstd, const T* residual, T* dx, int64_t rows,
                                     int64_t cols, int64_t per_block, float* partials,
                                     bool shared_partials) {
  KILN_DYNAMIC_SHARED_BYTES(smem);
  float* const gamma_row = partials + blockIdx.x * cols;
  float* const beta_row = partials + (gridDim.x + blockIdx.x) * cols;
  float* const part_gamma = shared_partials ? reinterpret_cast<float*>(smem) : gamma_row;
  float* const part_beta = shared_partials ? part_gamma + cols : beta_row;
  const int64_t groups = cols / kV;
  for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
#pragma unroll
    for (int k = 0; k < kV; ++k) part_gamma[j * kV + k] = part_beta[j * kV + k] = 0.0f;
  }
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const int64_t r0 = blockIdx.x * per_block;
  const int64_t r1 = r0 + per_block < rows ? r0 + per_block : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const T* dyr = dy + r * cols;
    const T* xr = x + r * cols;
    const float rs = rstd[r];
    const float m = kRms ? 0.0f : mean[r];
    float sum_g = 0, sum_gx = 0;
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
      float d[kV], xv[kV], g[kV];
      LoadBackwardGroup(dyr, xr, gamma, j, d, xv, g);
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        const float xhat = (xv[k] - m) * rs;
        const float gk = d[k] * g[k];
        sum_gx = fmaf(gk, xhat, sum_gx);
        const int64_t c = j * kV + k;
        part_gamma[c] = fmaf(d[k], kRms ? RoundTo<T>(xhat) : xhat, part_gamma[c]);
        if (!kRms) {
          sum_g += gk;
          part_beta[c] += d[k];
        }
      }
    }
    const float mean_g = kRms ? 0.0f : BlockSum(sum_g) * inv_cols;
    const float mean_gx = BlockSum(sum_gx) * inv_cols;
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
      float d[kV], xv[kV], g[kV];
      LoadBackwardGroup(dyr, xr, gamma, j, d, xv, g);
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        const float xhat = (xv[k] - m) * rs;
        d[k] = rs * (d[k] * g[k] - mean_g - xhat * mean_gx);
      }
      if (residual != nullptr) {  // Note [Residual gradient in the norm backward]
        float res[kV];
        LoadElements(residual + r * cols + j * kV, res);
#pragma unroll
        for (int k = 0; k < kV; ++k) d[k] = RoundTo<T>(d[k]) + res[k];
      }
      StoreElements(dx + r * cols + j * kV, d);
    }
  }
  if (shared_partials) {
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        gamma_row[j * kV + k] = part_gamma[j * kV + k];
        beta_row[j * kV + k] = part_beta[j * kV + k];
      }
    }
  }
}

// Note [Warp-per-row norm backward]
// Rows of up to 32 x 4 packs (1024 bf16 / f16, 512 f32 columns: GPT-2's 768, most models below
// 7B) go to norm_backward_warp_kernel instead: a warp owns a row, each lane up to 4 of its packs,
// which it loads once and keeps in registers for both passes (the block kernel above reads dy and
// x twice and meets at two block barriers per row); the row sums are warp shuffles; gamma is
// loaded once per warp, not per row; and the partial dgamma / dbeta stay in the lane's registers
// across the warp's rows. At the end the block's warps add theirs in warp order through shared
// memory into the block's partial rows, which sum_to reduces as before. Rows are dealt to warps
// in a fixed pattern (row r0 + w + kNormWarps i to warp w), so every sum keeps one order and the
// result repeats bit for bit; it is not the block kernel's order, so the two differ in the last
// bits of dgamma / dbeta and of the row sums.
constexpr int kNormWarps = 4;
constexpr int kMaxLanePacks = 4;
constexpr int64_t kMinWarpBlockRows = 32;

int64_t WarpRowBlocks(int64_t rows) {
  int64_t count = (rows + kMinWarpBlockRows - 1) / kMinWarpBlockRows;
  if (count > kMaxRowBlocks) count = kMaxRowBlocks;  // never more partial rows than RowBlocks
  return count < 1 ? 1 : count;
}

// Lane packs of a row: pack i of lane l is group l + 32 i, present while below `groups`.
template <typename T, int kV, int kLanePacks>
__device__ __forceinline__ void LoadLanePacks(const T* row, int64_t groups,
                                              float (&v)[kLanePacks][kV]) {
  const int lane = static_cast<int>(threadIdx.x % 32);
#pragma unroll
  for (int i = 0; i < kLanePacks; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < groups) {
      LoadElements(row + j * kV, v[i]);
    } else {
#pragma unroll
      for (int k = 0; k < kV; ++k) v[i][k] = 0.0f;
    }
  }
}

template <typename T, bool kRms, int kV, int kLanePacks>
__global__ void __launch_bounds__(32 * kNormWarps)
    norm_backward_warp_kernel(const T* dy, const T* x, const float* gamma, const float* mean,
                              const float* rstd, const T* residual, T* dx, int64_t rows,
                              int64_t cols, int64_t per_block, float* partials) {
  constexpr int kLaneCols = kLanePacks * 32 * kV;
  __shared__ float warp_partials[kNormWarps][2][kLaneCols];  // dgamma, dbeta per warp
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int64_t groups = cols / kV;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float g[kLanePacks][kV], part_gamma[kLanePacks][kV], part_beta[kLanePacks][kV];
  LoadLanePacks<float, kV, kLanePacks>(gamma, groups, g);
#pragma unroll
  for (int i = 0; i < kLanePacks; ++i) {
#pragma unroll
    for (int k = 0; k < kV; ++k) part_gamma[i][k] = part_beta[i][k] = 0.0f;
  }
  const int64_t r0 = blockIdx.x * per_block;
  const int64_t r1 = r0 + per_block < rows ? r0 + per_block : rows;
  for (int64_t r = r0 + warp; r < r1; r += kNormWarps) {
    float d[kLanePacks][kV], xhat[kLanePacks][kV];  // this lane's packs of the row
    LoadLanePacks<T, kV, kLanePacks>(dy + r * cols, groups, d);
    LoadLanePacks<T, kV, kLanePacks>(x + r * cols, groups, xhat);
    const float rs = rstd[r];
    const float m = kRms ? 0.0f : mean[r];
    float sum_g = 0, sum_gx = 0;
#pragma unroll
    for (int i = 0; i < kLanePacks; ++i) {
#pragma unroll
      for (int k = 0; k < kV; ++k) {  // absent packs are zeros and add nothing
        xhat[i][k] = (xhat[i][k] - m) * rs;
        const float gk = d[i][k] * g[i][k];
        sum_gx = fmaf(gk, xhat[i][k], sum_gx);
        part_gamma[i][k] =
            fmaf(d[i][k], kRms ? RoundTo<T>(xhat[i][k]) : xhat[i][k], part_gamma[i][k]);
        if (!kRms) {
          sum_g += gk;
          part_beta[i][k] += d[i][k];
        }
      }
    }
    const float mean_g = kRms ? 0.0f : WarpSum(sum_g) * inv_cols;
    const float mean_gx = WarpSum(sum_gx) * inv_cols;
    float res[kLanePacks][kV];
    if (residual != nullptr) LoadLanePacks<T, kV, kLanePacks>(residual + r * cols, groups, res);
#pragma unroll
    for (int i = 0; i < kLanePacks; ++i) {
      const int64_t j = lane + 32 * i;
      if (j >= groups) continue;
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        d[i][k] = rs * (d[i][k] * g[i][k] - mean_g - xhat[i][k] * mean_gx);
        // Note [Residual gradient in the norm backward]
        if (residual != nullptr) d[i][k] = RoundTo<T>(d[i][k]) + res[i][k];
      }
      StoreElements(dx + r * cols + j * kV, d[i]);
    }
  }
  // The block's partial rows: warp 0's sums, plus warp 1's, ..., in that order.
#pragma unroll
  for (int i = 0; i < kLanePacks; ++i) {
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      warp_partials[warp][0][(lane + 32 * i) * kV + k] = part_gamma[i][k];
      warp_partials[warp][1][(lane + 32 * i) * kV + k] = part_beta[i][k];
    }
  }
  __syncthreads();
  float* const gamma_row = partials + blockIdx.x * cols;
  float* const beta_row = partials + (gridDim.x + blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float sum_gamma = 0.0f, sum_beta = 0.0f;
#pragma unroll
    for (int w = 0; w < kNormWarps; ++w) {
      sum_gamma += warp_partials[w][0][c];
      sum_beta += warp_partials[w][1][c];
    }
    gamma_row[c] = sum_gamma;
    beta_row[c] = sum_beta;
  }
}

// Calls fn(std::integral_constant<int, kV>) with kV a pack of T when rows of cols elements fit
// at every pointer, else 1.
template <typename T, typename Fn>
void DispatchGroups(int64_t cols, std::initializer_list<const void*> pointers, Fn&& fn) {
  if (PacksFit<T>(cols, pointers)) {
    fn(std::integral_constant<int, Pack<T>::kSize>{});
  } else {
    fn(std::integral_constant<int, 1>{});
  }
}

}  // namespace

void LaunchNorm(const NormLaunch& a, StreamPtr stream) {
  if (a.rows == 0 || a.cols == 0) return;
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const unsigned grid = static_cast<unsigned>(a.rows);
    DispatchGroups<T>(a.cols, {x, y}, [&](auto v) {
      constexpr int kV = decltype(v)::value;
      if (a.rms) {
        Launch(norm_forward_kernel<T, true, kV>, grid, kThreads, 0, AsStream(stream), x, a.gamma,
               nullptr, y, nullptr, a.rstd, a.cols, a.eps);
      } else {
        Launch(norm_forward_kernel<T, false, kV>, grid, kThreads, 0, AsStream(stream), x, a.gamma,
               a.beta, y, a.mean, a.rstd, a.cols, a.eps);
      }
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

// The partial dgamma and dbeta matrices (blocks, cols) each, then the column sums' workspace.
size_t NormBackwardWorkspaceBytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>(2 * RowBlocks(rows) * cols) * sizeof(float) +
         SumToWorkspaceBytes(RowBlocks(rows), cols);
}

// Calls fn(std::integral_constant<int, kLanePacks>) for rows of `groups` packs that fit a warp
// (Note [Warp-per-row norm backward]) and returns true, else returns false.
template <typename Fn>
bool DispatchLanePacks(int64_t groups, Fn&& fn) {
  switch ((groups + 31) / 32) {
    case 1:
      fn(std::integral_constant<int, 1>{});
      return true;
    case 2:
      fn(std::integral_constant<int, 2>{});
      return true;
    case 3:
      fn(std::integral_constant<int, 3>{});
      return true;
    case 4:
      fn(std::integral_constant<int, kMaxLanePacks>{});
      return true;
    default:
      return false;
  }
}

void LaunchNormBackward(const NormLaunch& a, void* workspace, StreamPtr stream) {
  if (a.cols == 0) return;
  int64_t blocks = RowBlocks(a.rows);
  float* partials = static_cast<float*>(workspace);  // (2, blocks, cols)
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    const T* dy = static_cast<const T*>(a.dy);
    const T* x = static_cast<const T*>(a.x);
    T* dx = static_cast<T*>(a.dx);
    const T* residual = static_cast<const T*>(a.residual);
    DispatchGroups<T>(a.cols, {dy, x, dx, residual}, [&](auto v) {
      constexpr int kV = decltype(v)::value;
      const bool by_warp = kV > 1 && a.rows > 0 && DispatchLanePacks(a.cols / kV, [&](auto packs) {
                             constexpr int kLanePacks = decltype(packs)::value;
                             blocks = WarpRowBlocks(a.rows);
                             const int64_t per_block = (a.rows + blocks - 1) / blocks;
                             const auto kernel =
                                 a.rms ? norm_backward_warp_kernel<T, true, kV, kLanePacks>
                                       : norm_backward_warp_kernel<T, false, kV, kLanePacks>;
                             Launch(kernel, static_cast<unsigned>(blocks), 32 * kNormWarps, 0,
                                    AsStream(stream), dy, x, a.gamma, a.rms ? nullptr : a.mean,
                                    a.rstd, residual, dx, a.rows, a.cols, per_block, partials);
                           });
      if (by_warp) return;
      const int64_t per_block = a.rows == 0 ? 1 : (a.rows + blocks - 1) / blocks;
      const size_t partial_bytes = static_cast<size_t>(2 * a.cols) * sizeof(float);
      const bool shared = partial_bytes <= kMaxSharedPartialBytes;  // cols <= 6144
      const auto kernel =
          a.rms ? norm_backward_kernel<T, true, kV> : norm_backward_kernel<T, false, kV>;
      Launch(kernel, static_cast<unsigned>(blocks), kThreads, shared ? partial_bytes : 0,
             AsStream(stream), dy, x, a.gamma, a.rms ? nullptr : a.mean, a.rstd, residual, dx,
             a.rows, a.cols, per_block, partials, shared);
    });
  });
  // The column sums' workspace follows the largest partials either kernel writes (RowBlocks').
  void* sums_workspace = partials + 2 * RowBlocks(a.rows) * a.cols;
  // Blocks past the last row (per_block rounds up) leave zero partial rows.
  LaunchSumTo(FloatType::kF32, partials, blocks, a.cols, a.dgamma, sums_workspace, stream);
  if (!a.rms) {
    LaunchSumTo(FloatType::kF32, partials + blocks * a.cols, blocks, a.cols, a.dbeta,
                sums_workspace, stream);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
