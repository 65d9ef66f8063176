// Reduction CUDA kernels: sum / mean of all elements, sum_to (sum over leading axes), and the
// squared norm with a finiteness flag that the trainer's gradient clipping and fp16 loss scaler
// read. See Note [Deterministic reductions on the device].
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

// Note [Deterministic reductions on the device]
// No atomics: the input is cut into blocks whose size depends only on the shape (never on the
// number of multiprocessors), each block reduces its part in a fixed thread order into its own
// partial in the workspace, and one final block combines the partials in block order. The same
// input gives the same bits on every run and every GPU model.
constexpr int64_t kSumChunk = int64_t{1} << 14;
constexpr int kThreads = 256;
constexpr int64_t kMaxRowBlocks = 64;
constexpr int64_t kMinBlockRows = 8;

int64_t Chunks(int64_t n) { return n <= 0 ? 1 : (n + kSumChunk - 1) / kSumChunk; }

int64_t RowBlocks(int64_t rows) {
  int64_t count = (rows + kMinBlockRows - 1) / kMinBlockRows;
  if (count > kMaxRowBlocks) count = kMaxRowBlocks;
  return count < 1 ? 1 : count;
}

// partials[2 b] = sum of x (or x^2) over chunk b; partials[2 b + 1] = 1 when all finite. kV
// consecutive elements per thread and step (Note [Packed 16-byte accesses]); chunks start at
// multiples of kSumChunk, so a chunk of an aligned buffer is made of whole packs but for its tail.
template <typename T, bool kSquares, int kV>
__global__ void chunk_sum_kernel(const T* x, int64_t n, double* partials) {
  const int64_t begin = blockIdx.x * kSumChunk;
  const int64_t end = begin + kSumChunk < n ? begin + kSumChunk : n;
  double acc = 0;
  double finite = 1;
  const auto add = [&](float v) {
    if constexpr (kSquares) {
      acc += static_cast<double>(v) * v;
      if (!isfinite(v)) finite = 0;
    } else {
      acc += v;
    }
  };
  const int64_t grouped = begin + (end - begin) / kV * kV;
  for (int64_t i = begin + threadIdx.x * kV; i < grouped; i += blockDim.x * kV) {
    float v[kV];
    LoadElements(x + i, v);
#pragma unroll
    for (int k = 0; k < kV; ++k) add(v[k]);
  }
  for (int64_t i = grouped + threadIdx.x; i < end; i += blockDim.x) add(Load(x + i));
  acc = BlockSum(acc);
  if constexpr (kSquares) finite = BlockSum(finite) == blockDim.x ? 1.0 : 0.0;
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = acc;
    partials[2 * blockIdx.x + 1] = finite;
  }
}

// Launches chunk_sum_kernel<T, kSquares, kV> over n elements, packed when x is aligned.
template <typename T, bool kSquares>
void LaunchChunkSums(const T* x, int64_t n, double* partials, cudaStream_t stream) {
  const auto kernel = Aligned16({x}) ? chunk_sum_kernel<T, kSquares, Pack<T>::kSize>
                                     : chunk_sum_kernel<T, kSquares, 1>;
  Launch(kernel, static_cast<unsigned>(Chunks(n)), kThreads, 0, stream, x, n, partials);
}

// One block: combines `count` partial pairs in order.
__global__ void combine_kernel(const double* partials, int64_t count, double scale, float* out,
                               double* out_stats) {
  double acc = 0, finite = 1;
  // Each thread sums a strided subset in order; BlockSum then adds the threads in a fixed order.
  for (int64_t b = threadIdx.x; b < count; b += blockDim.x) {
    acc += partials[2 * b];
    finite = fmin(finite, partials[2 * b + 1]);
  }
  acc = BlockSum(acc);
  const double all_finite = BlockSum(finite) == blockDim.x ? 1.0 : 0.0;
  if (threadIdx.x == 0) {
    if (out != nullptr) out[0] = static_cast<float>(acc * scale);
    if (out_stats != nullptr) {
      out_stats[0] = acc;
      out_stats[1] = all_finite;
    }
  }
}

// Note [Column sums]
// sum_to over the leading axes is a column sum of a (rows, cols) matrix: the bias gradients, one
// read of a (B T, N) activation gradient each (GPT-2 124M at B 8: ~1.4 GB a step). A block is 32 x
// 8 threads over a block of rows: the 32 threads of a warp take consecutive packs of columns (Note
// [Packed 16-byte accesses]: 512 contiguous bytes a warp and load), the 8 warps interleave the
// rows (warp y adds rows y, y + 8, ... in order), and the 8 sums of a column are added in warp
// order through shared memory into the block's row of the output. Two launches of the same
// kernel: the row blocks' partial sums (f32), then those partial rows summed as one block. Row
// blocks depend only on the shape, so the bits repeat (Note [Deterministic reductions on the
// device]).
constexpr int kColumnLanes = 32, kRowLanes = 8;

// out (row_blocks, cols) = column sums of x (rows, cols) over each block of rows_per_block rows;
// kV columns per thread (a pack, or 1).
template <typename T, typename Out, int kV>
__global__ void __launch_bounds__(kColumnLanes* kRowLanes)
    column_sums_kernel(const T* x, int64_t rows, int64_t cols, int64_t rows_per_block, Out* out) {
  __shared__ float sums[kRowLanes][kColumnLanes * kV];
  const int lane = threadIdx.x % kColumnLanes, y = threadIdx.x / kColumnLanes;
  const int64_t c0 = blockIdx.x * int64_t{kColumnLanes} * kV;  // the block's first column
  const int64_t c = c0 + lane * kV;                            // the thread's first column
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float acc[kV] = {};
  if (c < cols) {
    for (int64_t r = r0 + y; r < r1; r += kRowLanes) {
      float v[kV];
      LoadElements(x + r * cols + c, v);
#pragma unroll
      for (int k = 0; k < kV; ++k) acc[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < kV; ++k) sums[y][lane * kV + k] = acc[k];
  __syncthreads();
  for (int j = threadIdx.x; j < kColumnLanes * kV && c0 + j < cols; j += blockDim.x) {
    float total = 0;
#pragma unroll
    for (int w = 0; w < kRowLanes; ++w) total += sums[w][j];
    Store(out + blockIdx.y * cols + c0 + j, total);
  }
}

// out (ceil(rows / rows_per_block), cols) = column sums of x's row blocks, packed when they fit.
template <typename T, typename Out>
void LaunchColumnSums(const T* x, int64_t rows, int64_t cols, int64_t rows_per_block, Out* out,
                      cudaStream_t stream) {
  const int64_t blocks = rows == 0 ? 1 : (rows + rows_per_block - 1) / rows_per_block;
  const auto launch = [&](auto kernel, int64_t v) {
    const int64_t per_block = kColumnLanes * v;
    const dim3 grid(static_cast<unsigned>((cols + per_block - 1) / per_block),
                    static_cast<unsigned>(blocks));
    Launch(kernel, grid, kColumnLanes * kRowLanes, 0, stream, x, rows, cols, rows_per_block, out);
  };
  if (PacksFit<T>(cols, {x})) {
    launch(column_sums_kernel<T, Out, Pack<T>::kSize>, Pack<T>::kSize);
  } else {
    launch(column_sums_kernel<T, Out, 1>, 1);
  }
}

}  // namespace

size_t SumWorkspaceBytes(int64_t n) { return static_cast<size_t>(Chunks(n)) * 2 * sizeof(double); }

void LaunchSum(FloatType type, const void* x, int64_t n, double scale, float* out, void* workspace,
               StreamPtr stream) {
  double* partials = static_cast<double*>(workspace);
  const int64_t chunks = Chunks(n);
  if (n > 0) {
    DispatchFloat(type, [&](auto t) {
      using T = decltype(t);
      LaunchChunkSums<T, false>(static_cast<const T*>(x), n, partials, AsStream(stream));
    });
  }
  Launch(combine_kernel, 1, kThreads, 0, AsStream(stream), partials, n > 0 ? chunks : 0, scale, out,
         nullptr);
  KILN_CUDA_CHECK_LAUNCH();
}

size_t NormStatsWorkspaceBytes(int64_t n) { return SumWorkspaceBytes(n); }

void LaunchNormStats(FloatType type, const void* x, int64_t n, double* result, void* workspace,
                     StreamPtr stream) {
  double* partials = static_cast<double*>(workspace);
  const int64_t chunks = Chunks(n);
  if (n > 0) {
    DispatchFloat(type, [&](auto t) {
      using T = decltype(t);
      LaunchChunkSums<T, true>(static_cast<const T*>(x), n, partials, AsStream(stream));
    });
  }
  Launch(combine_kernel, 1, kThreads, 0, AsStream(stream), partials, n > 0 ? chunks : 0, 1.0,
         nullptr, result);
  KILN_CUDA_CHECK_LAUNCH();
}

size_t SumToWorkspaceBytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>(RowBlocks(rows) * cols) * sizeof(float);
}

void LaunchSumTo(FloatType type, const void* x, int64_t rows, int64_t cols, void* out,
                 void* workspace, StreamPtr stream) {
  if (cols == 0) return;
  const int64_t rows_per_block = rows == 0 ? 1 : (rows + RowBlocks(rows) - 1) / RowBlocks(rows);
  const int64_t blocks = rows == 0 ? 1 : (rows + rows_per_block - 1) / rows_per_block;
  float* partial = static_cast<float*>(workspace);  // (blocks <= RowBlocks(rows), cols)
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    LaunchColumnSums(static_cast<const T*>(x), rows, cols, rows_per_block, partial,
                     AsStream(stream));
    LaunchColumnSums(static_cast<const float*>(partial), blocks, cols, blocks, static_cast<T*>(out),
                     AsStream(stream));
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
