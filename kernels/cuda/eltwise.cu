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

template <UnaryOp kOp>
__device__ __forceinline__ float ApplyUnary(float v, float a) {
  if constexpr (kOp == UnaryOp::kScale) {
    return a * v;
  } else if constexpr (kOp == UnaryOp::kGelu) {
    return Gelu(v);
  } else {
    return Silu(v);
  }
}

template <BinaryOp kOp>
__device__ __forceinline__ float ApplyBinary(float x, float y) {
  if constexpr (kOp == BinaryOp::kAdd) {
    return x + y;
  } else if constexpr (kOp == BinaryOp::kMul) {
    return x * y;
  } else if constexpr (kOp == BinaryOp::kGeluBackward) {
    return GeluBackward(x, y);
  } else {
    return SiluBackward(x, y);
  }
}

// The element-wise kernels take kV consecutive elements per thread and step (Note [Packed 16-byte
// accesses]: kV = a pack of the first input's type when the buffers are aligned, else 1), the
// n % kV elements past the last whole group one at a time.
template <UnaryOp kOp, typename Tx, typename Ty, int kV>
__global__ void unary_kernel(const Tx* x, Ty* y, int64_t n, float alpha, const float* alpha_ptr) {
  const float a = alpha_ptr != nullptr ? alpha * *alpha_ptr : alpha;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t p = first; p < n / kV; p += stride) {
    float v[kV];
    LoadElements(x + p * kV, v);
#pragma unroll
    for (int k = 0; k < kV; ++k) v[k] = ApplyUnary<kOp>(v[k], a);
    StoreElements(y + p * kV, v);
  }
  for (int64_t i = n / kV * kV + first; i < n; i += stride) {
    Store(y + i, ApplyUnary<kOp>(Load(x + i), a));
  }
}

// b has b_n elements, repeated over a's n (a suffix broadcast); kV > 1 only when b_n == n.
template <BinaryOp kOp, typename Ta, typename Tb, int kV>
__global__ void binary_kernel(const Ta* a, const Tb* b, Ta* out, int64_t n, int64_t b_n) {
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  if constexpr (kV > 1) {
    for (int64_t p = first; p < n / kV; p += stride) {
      float x[kV], y[kV];
      LoadElements(a + p * kV, x);
      LoadElements(b + p * kV, y);
#pragma unroll
      for (int k = 0; k < kV; ++k) x[k] = ApplyBinary<kOp>(x[k], y[k]);
      StoreElements(out + p * kV, x);
    }
  }
  const int64_t grouped = kV > 1 ? n / kV * kV : 0;  // kV == 1: every element here
  for (int64_t i = grouped + first; i < n; i += stride) {
    Store(out + i, ApplyBinary<kOp>(Load(a + i), Load(b + (b_n == n ? i : i % b_n))));
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
      constexpr int kPack = Pack<Tx>::kSize;
      const bool packed = Aligned16({x, y});
      const auto launch = [&](auto kernel, float a, const float* a_ptr) {
        Launch(kernel, GridFor(packed ? n / kPack + 1 : n, kThreads), kThreads, 0, AsStream(stream),
               static_cast<const Tx*>(x), static_cast<Ty*>(y), n, a, a_ptr);
      };
      const auto with_op = [&](auto op_constant, float a, const float* a_ptr) {
        constexpr UnaryOp kOp = decltype(op_constant)::value;
        if (packed) {
          launch(unary_kernel<kOp, Tx, Ty, kPack>, a, a_ptr);
        } else {
          launch(unary_kernel<kOp, Tx, Ty, 1>, a, a_ptr);
        }
      };
      if (op == UnaryOp::kScale) {
        with_op(std::integral_constant<UnaryOp, UnaryOp::kScale>{}, alpha, alpha_ptr);
      } else if constexpr (std::is_same_v<Tx, Ty>) {
        if (op == UnaryOp::kGelu) {
          with_op(std::integral_constant<UnaryOp, UnaryOp::kGelu>{}, 1, nullptr);
        } else {
          with_op(std::integral_constant<UnaryOp, UnaryOp::kSilu>{}, 1, nullptr);
        }
      }
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchBinary(BinaryOp op, FloatType a_type, FloatType b_type, const void* a, const void* b,
                  void* out, int64_t n, int64_t b_n, StreamPtr stream) {
  if (n == 0) return;
  const bool packed = b_n == n && Aligned16({a, b, out});
  DispatchFloat(a_type, [&](auto ta) {
    using Ta = decltype(ta);
    constexpr int kPack = Pack<Ta>::kSize;
    const unsigned grid = GridFor(packed ? n / kPack + 1 : n, kThreads);
    const auto launch = [&](auto op_constant, auto tb) {
      constexpr BinaryOp kOp = decltype(op_constant)::value;
      using Tb = decltype(tb);
      const auto kernel =
          packed ? binary_kernel<kOp, Ta, Tb, kPack> : binary_kernel<kOp, Ta, Tb, 1>;
      Launch(kernel, grid, kThreads, 0, AsStream(stream), static_cast<const Ta*>(a),
             static_cast<const Tb*>(b), static_cast<Ta*>(out), n, b_n);
    };
    using Op = BinaryOp;
    switch (op) {
      case Op::kAdd:  // b may be of another type (accumulate_grad)
        DispatchFloat(b_type, [&](auto tb) { launch(std::integral_constant<Op, Op::kAdd>{}, tb); });
        break;
      case Op::kMul:
        launch(std::integral_constant<Op, Op::kMul>{}, Ta{});
        break;
      case Op::kGeluBackward:
        launch(std::integral_constant<Op, Op::kGeluBackward>{}, Ta{});
        break;
      case Op::kSiluBackward:
        launch(std::integral_constant<Op, Op::kSiluBackward>{}, Ta{});
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
