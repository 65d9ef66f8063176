// Loss and lookup-gradient CUDA kernels: fused softmax cross-entropy over the vocabulary (loss and
// dlogits in one kernel per row; dlogits may overwrite logits) and the deterministic embedding
// gradient. An id or target out of range is a broken contract: the kernel traps, and the next
// CUDA call on the stream reports the failure (the CPU kernels abort with a message instead).
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// workspace: [0] int64 counted rows, then (rows) f32 row losses.
__global__ void count_targets_kernel(const int32_t* targets, int64_t rows, int64_t vocab,
                                     int32_t ignore_index, int64_t* counted) {
  int64_t n = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int32_t t = targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= vocab) __trap();
    ++n;
  }
  n = BlockSum(n);
  if (threadIdx.x == 0) *counted = n;
}

// Note [Fused cross-entropy] (kernels/cpu/loss.cc) on the device: one block per row; the target
// logit is read before the barriers that precede any write, so dlogits may alias logits.
template <typename T>
__global__ void cross_entropy_kernel(const T* logits, const int32_t* targets, T* dlogits,
                                     int64_t vocab, int32_t ignore_index, const int64_t* counted,
                                     const float* grad_scale, float* row_loss) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * vocab;
  T* g = dlogits + r * vocab;
  const int32_t target = targets[r];
  if (target == ignore_index) {
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) Store(g + j, 0.0f);
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    return;
  }
  const float x_target = Load(x + target);
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, Load(x + j));
  const float row_max = BlockMax(m);
  float s = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(Load(x + j) - row_max);
  const float sum = BlockSum(s);
  const float inv_counted = 1.0f / static_cast<float>(*counted);
  const float scale = inv_counted / sum;
  const float seed = grad_scale != nullptr ? *grad_scale : 1.0f;  // cross_entropy_scaled
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf((j == target ? x_target : Load(x + j)) - row_max) * scale;
    Store(g + j, (j == target ? p - inv_counted : p) * seed);
  }
  if (threadIdx.x == 0) row_loss[r] = logf(sum) + row_max - x_target;
}

__global__ void mean_loss_kernel(const float* row_loss, int64_t rows, const int64_t* counted,
                                 float* loss) {
  double total = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) total += row_loss[r];
  total = BlockSum(total);
  // Note [Cross-entropy with no counted rows] (kernels/cpu/register_loss.cc): 0, not NaN.
  if (threadIdx.x == 0) *loss = *counted > 0 ? static_cast<float>(total / *counted) : 0.0f;
}

// Note [Deterministic embedding gradient]
// Block (column tile, bucket) adds the dy rows of every id in its bucket (id % buckets) in
// increasing i, each thread owning one column of the tile. Every (id, column) cell has exactly
// one owner that adds its rows in a fixed order: no atomics, identical bits on every run.
constexpr int kEmbeddingTile = 128;
constexpr int kEmbeddingBuckets = 64;

template <typename T>
__global__ void embedding_backward_kernel(const T* dy, const int32_t* ids, float* dtable, int64_t n,
                                          int64_t vocab, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t{kEmbeddingTile} + threadIdx.x;
  const int bucket = blockIdx.y;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    // Checked before the bucket test: a negative id (id % 64 <= 0) matches no bucket but 0.
    if (id < 0 || id >= vocab) __trap();
    if (id % kEmbeddingBuckets != bucket) continue;
    if (c < cols) dtable[id * cols + c] += Load(dy + i * cols + c);
  }
}

}  // namespace

size_t CrossEntropyWorkspaceBytes(int64_t rows) {
  return sizeof(int64_t) + static_cast<size_t>(rows) * sizeof(float);
}

void LaunchCrossEntropy(FloatType type, const void* logits, const int32_t* targets, void* dlogits,
                        int64_t rows, int64_t vocab, int32_t ignore_index, const float* scale,
                        float* loss, void* workspace, StreamPtr stream) {
  int64_t* counted = static_cast<int64_t*>(workspace);
  float* row_loss = reinterpret_cast<float*>(counted + 1);
  Launch(count_targets_kernel, 1, 1024, 0, AsStream(stream), targets, rows, vocab, ignore_index,
         counted);
  if (rows > 0 && vocab > 0) {
    DispatchFloat(type, [&](auto t) {
      using T = decltype(t);
      Launch(cross_entropy_kernel<T>, static_cast<unsigned>(rows), kThreads, 0, AsStream(stream),
             static_cast<const T*>(logits), targets, static_cast<T*>(dlogits), vocab, ignore_index,
             counted, scale, row_loss);
    });
  }
  Launch(mean_loss_kernel, 1, 1024, 0, AsStream(stream), row_loss, vocab > 0 ? rows : 0, counted,
         loss);
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchEmbeddingBackward(FloatType type, const void* dy, const int32_t* ids, float* dtable,
                             int64_t n, int64_t vocab, int64_t cols, StreamPtr stream) {
  KILN_CUDA_CHECK(cudaMemsetAsync(dtable, 0, static_cast<size_t>(vocab * cols) * sizeof(float),
                                  AsStream(stream)));
  if (n == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned>((cols + kEmbeddingTile - 1) / kEmbeddingTile),
                  kEmbeddingBuckets);
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(embedding_backward_kernel<T>, grid, kEmbeddingTile, 0, AsStream(stream),
           static_cast<const T*>(dy), ids, dtable, n, vocab, cols);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
