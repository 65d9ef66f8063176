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
// dtable (vocab, cols) f32 = the sum, per id, of the dy rows at that id's positions, with no
// atomics and the same bits on every run. Block (column tile, bucket) owns the cells (id, c) of
// the ids in its bucket (id % kEmbeddingBuckets) and the tile's columns, so every cell has one
// owner. The block reads the ids a window of kEmbeddingTile at a time, appends the positions
// whose id is in its bucket to a list in shared memory (window order, so increasing position),
// and when the list is full or the ids are done, sorts it by (id, position) and walks it: each
// thread sums a run of one id's rows for its column in a register and adds the run to the
// table once. An id's rows are therefore added in increasing position, as the CPU kernel adds
// them; an id whose rows span several lists gets one partial sum per list, in list order.
// Before, every thread of every block walked all n ids and did a read-modify-write in global
// memory per matching row: a frequent token (a few percent of the batch) made a chain of
// hundreds of dependent global round trips in its block.
constexpr int kEmbeddingTile = 128;     // columns per block, one per thread; also the id window
constexpr int kEmbeddingBuckets = 128;  // id buckets, the grid's y
constexpr int kEmbeddingList = 1024;    // (id, position) keys per sorted list, a power of two
constexpr int kEmbeddingWarps = kEmbeddingTile / 32;

// The inclusive prefix sum of v over the warp's lanes (lane i: v of lanes 0..i).
__device__ __forceinline__ int WarpInclusiveSum(int v) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int other = __shfl_sync(0xffffffffu, v, lane - d);
    if (lane >= d) v += other;
  }
  return v;
}

// Sorts keys[0, size) ascending (size a power of two), by the whole block.
__device__ void BitonicSort(uint64_t* keys, int size) {
  for (int k = 2; k <= size; k *= 2) {
    for (int j = k / 2; j > 0; j /= 2) {
      for (int t = threadIdx.x; t < size; t += blockDim.x) {
        const int partner = t ^ j;
        if (partner <= t) continue;
        const uint64_t a = keys[t], b = keys[partner];
        if ((a > b) == ((t & k) == 0)) {
          keys[t] = b;
          keys[partner] = a;
        }
      }
      __syncthreads();
    }
  }
}

// Sorts the block's list of `count` keys (id << 32 | position) and adds each id's run of dy rows
// to its table row, column c.
template <typename T>
__device__ void AddSortedRuns(uint64_t* keys, int count, const T* __restrict__ dy,
                              float* __restrict__ dtable, int64_t cols, int64_t c) {
  int size = 2;
  while (size < count) size *= 2;
  for (int t = count + threadIdx.x; t < size; t += blockDim.x) keys[t] = ~uint64_t{0};
  __syncthreads();
  BitonicSort(keys, size);
  if (c < cols) {
    int64_t run_id = -1;
    float sum = 0.0f;
    for (int e = 0; e < count; ++e) {
      const int64_t id = static_cast<int64_t>(keys[e] >> 32);
      const int64_t position = static_cast<int64_t>(keys[e] & 0xffffffffu);
      if (id != run_id) {
        if (run_id >= 0) dtable[run_id * cols + c] += sum;
        run_id = id;
        sum = 0.0f;
      }
      sum += Load(dy + position * cols + c);
    }
    if (run_id >= 0) dtable[run_id * cols + c] += sum;
  }
  __syncthreads();  // the list is free for the next window
}

template <typename T>
__global__ void __launch_bounds__(kEmbeddingTile)
    embedding_backward_kernel(const T* __restrict__ dy, const int32_t* __restrict__ ids,
                              float* __restrict__ dtable, int64_t n, int64_t vocab, int64_t cols) {
  __shared__ uint64_t keys[kEmbeddingList];
  __shared__ int warp_counts[kEmbeddingWarps];
  const int64_t c = blockIdx.x * int64_t{kEmbeddingTile} + threadIdx.x;
  const int bucket = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int count = 0;  // keys in the list, the same in every thread
  for (int64_t w = 0; w < n; w += kEmbeddingTile) {
    if (count + kEmbeddingTile > kEmbeddingList) {
      AddSortedRuns(keys, count, dy, dtable, cols, c);
      count = 0;
    }
    const int64_t i = w + threadIdx.x;
    int32_t id = -1;
    if (i < n) {
      id = ids[i];
      if (id < 0 || id >= vocab) __trap();
    }
    const int match = id >= 0 && id % kEmbeddingBuckets == bucket ? 1 : 0;
    const int before_in_warp = WarpInclusiveSum(match) - match;
    if (lane == 31) warp_counts[warp] = before_in_warp + match;
    __syncthreads();
    int slot = count + before_in_warp, window = 0;
    for (int v = 0; v < kEmbeddingWarps; ++v) {
      if (v < warp) slot += warp_counts[v];
      window += warp_counts[v];
    }
    if (match) keys[slot] = static_cast<uint64_t>(id) << 32 | static_cast<uint64_t>(i);
    count += window;
    __syncthreads();  // the keys are written and warp_counts is free
  }
  if (count > 0) AddSortedRuns(keys, count, dy, dtable, cols, c);
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
