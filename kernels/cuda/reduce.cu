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

// partials[2 b] = sum of x (or x^2) over chunk b; partials[2 b + 1] = 1 when all finite.
template <typename T, bool kSquares>
__global__ void chunk_sum_kernel(const T* x, int64_t n, double* partials) {
  const int64_t begin = blockIdx.x * kSumChunk;
  const int64_t end = begin + kSumChunk < n ? begin + kSumChunk : n;
  double acc = 0;
  double finite = 1;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float v = Load(x + i);
    if constexpr (kSquares) {
      acc += static_cast<double>(v) * v;
      if (!isfinite(v)) finite = 0;
    } else {
      acc += v;
    }
  }
  acc = BlockSum(acc);
  if constexpr (kSquares) finite = BlockSum(finite) == blockDim.x ? 1.0 : 0.0;
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = acc;
    partials[2 * blockIdx.x + 1] = finite;
  }
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

// partial (row_blocks, cols) f32: column sums of each row block.
template <typename T>
__global__ void column_partials_kernel(const T* x, int64_t rows, int64_t cols,
                                       int64_t rows_per_block, float* partial) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float acc = 0;
  for (int64_t r = r0; r < r1; ++r) acc += Load(x + r * cols + c);
  partial[blockIdx.y * cols + c] = acc;
}

template <typename T>
__global__ void column_combine_kernel(const float* partial, int64_t blocks, int64_t cols, T* out) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  float acc = 0;
  for (int64_t b = 0; b < blocks; ++b) acc += partial[b * cols + c];
  Store(out + c, acc);
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
      Launch(chunk_sum_kernel<T, false>, static_cast<unsigned>(chunks), kThreads, 0,
             AsStream(stream), static_cast<const T*>(x), n, partials);
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
      Launch(chunk_sum_kernel<T, true>, static_cast<unsigned>(chunks), kThreads, 0,
             AsStream(stream), static_cast<const T*>(x), n, partials);
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
  const int64_t blocks = RowBlocks(rows);
  const int64_t rows_per_block = rows == 0 ? 1 : (rows + blocks - 1) / blocks;
  float* partial = static_cast<float*>(workspace);
  const unsigned col_grid = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(column_partials_kernel<T>, dim3(col_grid, static_cast<unsigned>(blocks)), kThreads, 0,
           AsStream(stream), static_cast<const T*>(x), rows, cols, rows_per_block, partial);
    Launch(column_combine_kernel<T>, col_grid, kThreads, 0, AsStream(stream), partial, blocks, cols,
           static_cast<T*>(out));
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
