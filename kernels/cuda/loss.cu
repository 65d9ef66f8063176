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

// Note [Fused cross-entropy on the device]
// One block per row, two passes over the logits instead of the CPU's three (Note [Fused
// cross-entropy], kernels/cpu/loss.cc): a GPU row of 50k logits does not stay in cache while 8
// blocks a multiprocessor stream theirs, so every pass costs a DRAM read. Pass one keeps an online
// max and sum per thread (a pack's max first, the thread's sum rescaled when it grows, then the
// pack's exps); the threads' pairs are combined at the block max. Pass two writes
// dlogits = exp(x - max) / sum / counted (times the loss seed), 1 / counted subtracted at the
// target. Logits move in packs where the row allows (Note [Packed 16-byte accesses]). The target
// logit is read before the barriers that precede any write, and each thread reads a pack before it
// writes it, so dlogits may alias logits.
template <typename T, int kV>
__global__ void cross_entropy_kernel(const T* logits, const int32_t* targets, T* dlogits,
                                     int64_t vocab, int32_t ignore_index, const int64_t* counted,
                                     const float* grad_scale, float* row_loss) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * vocab;
  T* g = dlogits + r * vocab;
  const int32_t target = targets[r];
  const int64_t packs = vocab / kV;
  if (target == ignore_index) {
    const float zeros[kV] = {};
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) StoreElements(g + j * kV, zeros);
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    return;
  }
  const float x_target = Load(x + target);
  float m = -INFINITY, s = 0;  // the thread's running max and its sum of exp(x - m)
  for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
    float v[kV];
    LoadElements(x + j * kV, v);
    float pack_max = v[0];
#pragma unroll
    for (int k = 1; k < kV; ++k) pack_max = fmaxf(pack_max, v[k]);
    if (pack_max > m) {
      s *= expf(m - pack_max);  // 0 while m is -inf
      m = pack_max;
    }
#pragma unroll
    for (int k = 0; k < kV; ++k) s += expf(v[k] - m);
  }
  const float row_max = BlockMax(m);
  const float sum = BlockSum(m == -INFINITY ? 0.0f : s * expf(m - row_max));
  const float inv_counted = 1.0f / static_cast<float>(*counted);
  const float scale = inv_counted / sum;
  const float seed = grad_scale != nullptr ? *grad_scale : 1.0f;  // cross_entropy_scaled
  for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
    float v[kV];
    LoadElements(x + j * kV, v);
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      const bool at_target = j * kV + k == target;
      const float p = expf((at_target ? x_target : v[k]) - row_max) * scale;
      v[k] = (at_target ? p - inv_counted : p) * seed;
    }
    StoreElements(g + j * kV, v);
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
      const auto launch = [&](auto kernel) {
        Launch(kernel, static_cast<unsigned>(rows), kThreads, 0, AsStream(stream),
               static_cast<const T*>(logits), targets, static_cast<T*>(dlogits), vocab,
               ignore_index, counted, scale, row_loss);
      };
      if (PacksFit<T>(vocab, {logits, dlogits})) {
        launch(cross_entropy_kernel<T, Pack<T>::kSize>);
      } else {
        launch(cross_entropy_kernel<T, 1>);
      }
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
