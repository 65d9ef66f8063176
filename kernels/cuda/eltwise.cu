// Element-wise CUDA kernels: scale/cast, GELU, SiLU, add (suffix broadcast, mixed types for
// accumulate_grad), mul, the activation backwards, SwiGLU, fill from a device scalar, dropout
// (Philox, the CPU's stream), the embedding gather and RoPE. f32 compute, any storage type;
// outputs may alias inputs (each element is read before it is written by the same thread).
#include "engine/core/rng.h"
#include "kernels/cuda/device_util.cuh"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Note [GELU tanh approximation] (kernels/cpu/vec/vec_math.h): the same function on the device, in
// its tanh form (tanhf saturates cleanly; the CPU's sigmoid form needs its clamped Exp), so the
// results agree to a few ulp rather than bit for bit.
constexpr float kGeluBeta = 0.7978845608028654f;
constexpr float kGeluKappa = 0.044715f;

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float Gelu(float x) {
  const float inner = kGeluBeta * fmaf(kGeluKappa, x * x * x, x);
  return 0.5f * x * (1.0f + tanhf(inner));
}
__device__ __forceinline__ float GeluBackward(float dy, float x) {
  const float x_sq = x * x;
  const float t = tanhf(kGeluBeta * fmaf(kGeluKappa * x_sq, x, x));
  const float left = 0.5f * x, left_derivative = 0.5f * (1.0f + t);
  const float right_derivative = (1.0f - t * t) * kGeluBeta * fmaf(3.0f * kGeluKappa, x_sq, 1.0f);
  return dy * fmaf(left, right_derivative, left_derivative);
}
__device__ __forceinline__ float Silu(float x) { return x * Sigmoid(x); }
__device__ __forceinline__ float SiluBackward(float dy, float x) {
  const float s = Sigmoid(x);
  return dy * s * fmaf(x, 1.0f - s, 1.0f);
}

template <UnaryOp kOp, typename Tx, typename Ty>
__global__ void unary_kernel(const Tx* x, Ty* y, int64_t n, float alpha, const float* alpha_ptr) {
  const float a = alpha_ptr != nullptr ? alpha * *alpha_ptr : alpha;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = Load(x + i);
    float r;
    if constexpr (kOp == UnaryOp::kScale) {
      r = a * v;
    } else if constexpr (kOp == UnaryOp::kGelu) {
      r = Gelu(v);
    } else {
      r = Silu(v);
    }
    Store(y + i, r);
  }
}

template <BinaryOp kOp, typename Ta, typename Tb>
__global__ void binary_kernel(const Ta* a, const Tb* b, Ta* out, int64_t n, int64_t b_n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float x = Load(a + i);
    const float y = Load(b + (b_n == n ? i : i % b_n));
    float r;
    if constexpr (kOp == BinaryOp::kAdd) {
      r = x + y;
    } else if constexpr (kOp == BinaryOp::kMul) {
      r = x * y;
    } else if constexpr (kOp == BinaryOp::kGeluBackward) {
      r = GeluBackward(x, y);
    } else {
      r = SiluBackward(x, y);
    }
    Store(out + i, r);
  }
}

template <typename T>
__global__ void swiglu_kernel(const T* gu, T* out, int64_t rows, int64_t f) {
  const int64_t n = rows * f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const T* gate = gu + r * 2 * f;
    Store(out + i, Silu(Load(gate + c)) * Load(gate + f + c));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* dy, const T* gu, T* dgu, int64_t rows, int64_t f) {
  const int64_t n = rows * f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const float g = Load(gu + r * 2 * f + c), u = Load(gu + r * 2 * f + f + c);
    const float d = Load(dy + i);
    const float s = Sigmoid(g);
    Store(dgu + r * 2 * f + f + c, d * g * s);
    Store(dgu + r * 2 * f + c, d * u * s * fmaf(g, 1.0f - s, 1.0f));
  }
}

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, const float* value, float alpha) {
  const float v = *value * alpha;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Store(out + i, v);
  }
}

// One thread per group of four elements: one Philox call gives their four uniforms.
template <typename T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, float p, const int64_t* seed_step,
                               uint32_t stream_id) {
  uint32_t words[4];
  Philox::Generate(static_cast<uint64_t>(seed_step[0]),
                   (static_cast<uint64_t>(seed_step[1]) << 32) | stream_id, words);
  const uint64_t key = static_cast<uint64_t>(words[0]) | (static_cast<uint64_t>(words[1]) << 32);
  const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups;
       g += int64_t{gridDim.x} * blockDim.x) {
    uint32_t u[4];
    Philox::Generate(key, static_cast<uint64_t>(g), u);
    for (int k = 0; k < 4; ++k) {
      const int64_t i = g * 4 + k;
      if (i >= n) break;
      const float v = Load(x + i) * scale;
      Store(y + i, Philox::ToUniform(u[k]) < p ? 0.0f : v);
    }
  }
}

// One block per output row; 16-byte words when the rows and both buffers are 16-byte aligned.
__global__ void embedding_kernel(const char* table, const int32_t* ids, char* out, int64_t vocab,
                                 int64_t row_bytes, bool wide) {
  const int64_t i = blockIdx.x;
  if (ids[i] < 0 || ids[i] >= vocab) __trap();
  const char* src = table + static_cast<int64_t>(ids[i]) * row_bytes;
  char* dst = out + i * row_bytes;
  if (wide) {
    for (int64_t w = threadIdx.x; w < row_bytes / 16; w += blockDim.x) {
      reinterpret_cast<int4*>(dst)[w] = reinterpret_cast<const int4*>(src)[w];
    }
  } else {
    for (int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) dst[b] = src[b];
  }
}

// Per (row, rotated head, i < D/2): (x1, x2) -> (x1 c - x2 s, x2 c + x1 s); v heads copied.
template <typename T>
__global__ void rope_kernel(const T* x, T* y, int64_t rows, int64_t seq, int n_head, int n_kv,
                            int head_dim, const float* cos, const float* sin, float sign) {
  const int half = head_dim / 2;
  const int64_t stride = static_cast<int64_t>(n_head + 2 * n_kv) * head_dim;
  const int rotated = n_head + n_kv;
  const int64_t per_row =
      static_cast<int64_t>(rotated) * half + static_cast<int64_t>(n_kv) * head_dim;
  const int64_t n = rows * per_row;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = idx / per_row, k = idx % per_row;
    const T* xr = x + row * stride;
    T* yr = y + row * stride;
    if (k < static_cast<int64_t>(rotated) * half) {
      const int h = static_cast<int>(k / half), i = static_cast<int>(k % half);
      const int64_t t = row % seq;
      const float a = Load(xr + h * head_dim + i), b = Load(xr + h * head_dim + half + i);
      const float c = cos[t * half + i], s = sin[t * half + i] * sign;
      Store(yr + h * head_dim + i, a * c - b * s);
      Store(yr + h * head_dim + half + i, b * c + a * s);
    } else if (x != y) {
      const int64_t j = static_cast<int64_t>(rotated) * head_dim + (k - rotated * half);
      yr[j] = xr[j];
    }
  }
}

}  // namespace

void LaunchUnary(UnaryOp op, FloatType x_type, FloatType y_type, const void* x, void* y, int64_t n,
                 float alpha, const float* alpha_ptr, StreamPtr stream) {
  if (n == 0) return;
  DispatchFloat(x_type, [&](auto tx) {
    using Tx = decltype(tx);
    DispatchFloat(y_type, [&](auto ty) {
      using Ty = decltype(ty);
      const Tx* xs = static_cast<const Tx*>(x);
      Ty* ys = static_cast<Ty*>(y);
      const unsigned grid = GridFor(n, kThreads);
      if (op == UnaryOp::kScale) {
        Launch(unary_kernel<UnaryOp::kScale, Tx, Ty>, grid, kThreads, 0, AsStream(stream), xs, ys,
               n, alpha, alpha_ptr);
      } else if constexpr (std::is_same_v<Tx, Ty>) {
        if (op == UnaryOp::kGelu) {
          Launch(unary_kernel<UnaryOp::kGelu, Tx, Ty>, grid, kThreads, 0, AsStream(stream), xs, ys,
                 n, 1, nullptr);
        } else {
          Launch(unary_kernel<UnaryOp::kSilu, Tx, Ty>, grid, kThreads, 0, AsStream(stream), xs, ys,
                 n, 1, nullptr);
        }
      }
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchBinary(BinaryOp op, FloatType a_type, FloatType b_type, const void* a, const void* b,
                  void* out, int64_t n, int64_t b_n, StreamPtr stream) {
  if (n == 0) return;
  const unsigned grid = GridFor(n, kThreads);
  DispatchFloat(a_type, [&](auto ta) {
    using Ta = decltype(ta);
    const Ta* as = static_cast<const Ta*>(a);
    Ta* os = static_cast<Ta*>(out);
    if (op == BinaryOp::kAdd) {
      DispatchFloat(b_type, [&](auto tb) {
        using Tb = decltype(tb);
        Launch(binary_kernel<BinaryOp::kAdd, Ta, Tb>, grid, kThreads, 0, AsStream(stream), as,
               static_cast<const Tb*>(b), os, n, b_n);
      });
      return;
    }
    const Ta* bs = static_cast<const Ta*>(b);
    switch (op) {
      case BinaryOp::kMul:
        Launch(binary_kernel<BinaryOp::kMul, Ta, Ta>, grid, kThreads, 0, AsStream(stream), as, bs,
               os, n, b_n);
        break;
      case BinaryOp::kGeluBackward:
        Launch(binary_kernel<BinaryOp::kGeluBackward, Ta, Ta>, grid, kThreads, 0, AsStream(stream),
               as, bs, os, n, b_n);
        break;
      case BinaryOp::kSiluBackward:
        Launch(binary_kernel<BinaryOp::kSiluBackward, Ta, Ta>, grid, kThreads, 0, AsStream(stream),
               as, bs, os, n, b_n);
        break;
      case BinaryOp::kAdd:
        break;
    }
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchSwiglu(FloatType type, const void* gu, void* out, int64_t rows, int64_t f,
                  StreamPtr stream) {
  if (rows * f == 0) return;
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(swiglu_kernel<T>, GridFor(rows * f, kThreads), kThreads, 0, AsStream(stream),
           static_cast<const T*>(gu), static_cast<T*>(out), rows, f);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchSwigluBackward(FloatType type, const void* dy, const void* gu, void* dgu, int64_t rows,
                          int64_t f, StreamPtr stream) {
  if (rows * f == 0) return;
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(swiglu_backward_kernel<T>, GridFor(rows * f, kThreads), kThreads, 0, AsStream(stream),
           static_cast<const T*>(dy), static_cast<const T*>(gu), static_cast<T*>(dgu), rows, f);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchFillFromScalar(FloatType type, void* out, int64_t n, const float* value, float alpha,
                          StreamPtr stream) {
  if (n == 0) return;
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(fill_kernel<T>, GridFor(n, kThreads), kThreads, 0, AsStream(stream),
           static_cast<T*>(out), n, value, alpha);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchDropout(FloatType type, const void* x, void* y, int64_t n, float p,
                   const int64_t* seed_step, uint32_t stream_id, StreamPtr stream) {
  if (n == 0) return;
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(dropout_kernel<T>, GridFor((n + 3) / 4, kThreads), kThreads, 0, AsStream(stream),
           static_cast<const T*>(x), static_cast<T*>(y), n, p, seed_step, stream_id);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchEmbedding(const void* table, const int32_t* ids, void* out, int64_t n, int64_t vocab,
                     int64_t row_bytes, StreamPtr stream) {
  if (n == 0 || row_bytes == 0) return;
  const bool wide =
      row_bytes % 16 == 0 &&
      (reinterpret_cast<uintptr_t>(table) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  Launch(embedding_kernel, static_cast<unsigned>(n), 128, 0, AsStream(stream),
         static_cast<const char*>(table), ids, static_cast<char*>(out), vocab, row_bytes, wide);
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchRope(FloatType type, const void* x, void* y, int64_t batch, int64_t seq, int n_head,
                int n_kv_head, int head_dim, const float* cos, const float* sin, bool inverse,
                StreamPtr stream) {
  const int64_t rows = batch * seq;
  const int64_t n = rows * ((n_head + n_kv_head) * (head_dim / 2) + n_kv_head * head_dim);
  if (n == 0) return;
  DispatchFloat(type, [&](auto t) {
    using T = decltype(t);
    Launch(rope_kernel<T>, GridFor(n, kThreads), kThreads, 0, AsStream(stream),
           static_cast<const T*>(x), static_cast<T*>(y), rows, seq, n_head, n_kv_head, head_dim,
           cos, sin, inverse ? -1.0f : 1.0f);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
