// Fused causal (or full) attention on packed qkv with grouped-query heads, flash style: scores
// live in registers and shared-memory tiles, never as a (T x T) matrix in global memory. The
// forward writes out and the per-query log-sum-exp; the backward recomputes the probabilities from
// q, k and lse. f32 compute for every storage type. See Note [CUDA attention scheme].
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/attention_geometry.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch_geometry.h"

namespace kiln::kernels::cuda {
namespace {

// Note [CUDA attention scheme]
// Each query row (forward, dq) or key row (dk/dv) is owned by a group of kD / 32 adjacent lanes
// (RowLanes: 1, 2 or 4). A lane holds 32 of the row's dimensions in registers, interleaved
// (dimension i * lanes + lane), so that the group's lanes read consecutive shared-memory words
// (no bank conflicts), and a dot product is the lanes' partial sums added with warp shuffles
// (RowSum; the butterfly gives every lane of the group the same sum).
// Forward: a query row's group holds q (pre-scaled) and its output accumulator, and streams
// key/value tiles through shared memory with an online softmax (running max m and sum l; the
// accumulator is rescaled when m grows). lse = m + log(l).
// Backward, three kernels: delta = rowsum(dout * out); dq with a group per query row (keys
// streamed as in the forward); dk and dv with a group per key row of a kv head, streaming the
// query tiles of every query head of its group — each output element has one owner that adds its
// terms in a fixed order, so the backward is deterministic without atomics. With P = exp(scale
// q.k - lse): dv += P dout, dP = dout.v, dS = scale P (dP - delta), dq += dS k, dk += dS q.
// The shuffles are warp-wide: every lane of a warp runs the same steps (the keys up to the
// diagonal of the warp's last query row, or the queries from the warp's first key row, under a
// causal mask) and skips the arithmetic of the steps its own row does not see. 32 dimensions a
// lane keep q, out, dout and the gradients of one row in registers at every head dimension: no
// spills (kernel_resources_test reads ptxas's report), where one thread per row spilled up to
// 3.9 KB at head_dim 128.
// The head dimension is a template bound kD (32, 64 or 128); dimensions past the real head_dim
// hold zeros. This is the simple scheme, not a tensor-core kernel: it is the fallback for f32 and
// for what attention_tc.cu does not take (Note [Choosing the attention kernels]).

constexpr int kQueryRows = 64;  // query rows per forward / dq block
constexpr int kKeyRows = 64;    // key rows per dk/dv block
constexpr int kLaneDims = 32;   // dimensions per lane

template <int kD>
struct Tiles {
  static constexpr int kRowLanes = kD / kLaneDims;  // lanes per row
  static constexpr int kKeys = 4096 / kD;           // keys per shared tile (32 KiB for k+v)
  static constexpr int kQueries = 2048 / kD;        // queries per shared tile in dk/dv (16 KiB)
};

// The sum of `partial` over the row's kLanes adjacent lanes, in every one of them.
template <int kLanes>
__device__ __forceinline__ float RowSum(float partial) {
#pragma unroll
  for (int offset = 1; offset < kLanes; offset <<= 1) {
    partial += __shfl_xor_sync(0xffffffffu, partial, offset);
  }
  return partial;
}

// The calling lane's row within its block, its lane within the row's group, and the first row
// of its warp (rows of one warp are consecutive).
template <int kD>
struct RowLane {
  int row, lane, warp_row0;
  __device__ RowLane()
      : row(threadIdx.x / Tiles<kD>::kRowLanes),
        lane(threadIdx.x % Tiles<kD>::kRowLanes),
        warp_row0(threadIdx.x / 32 * (32 / Tiles<kD>::kRowLanes)) {}
  static constexpr int kWarpRows = 32 / Tiles<kD>::kRowLanes;
  // The dimension of the lane's i-th value.
  __device__ int Dim(int i) const { return i * Tiles<kD>::kRowLanes + lane; }
};

__device__ __forceinline__ int ClampSteps(int64_t n, int tile) {
  return static_cast<int>(n < 0 ? 0 : (n < tile ? n : tile));
}

// Loads rows [r0, r0 + rows) of the head at column `col` of a (T, stride) block into
// tile[rows][ld] as f32 (zeros past seq and past head_dim).
template <int kD, typename T>
__device__ void LoadTile(float* tile, int ld, const T* base, int64_t stride, int64_t col,
                         int64_t r0, int rows, const Geometry& g) {
  for (int e = threadIdx.x; e < rows * kD; e += blockDim.x) {
    const int r = e / kD, d = e % kD;
    const int64_t t = r0 + r;
    tile[r * ld + d] = (t < g.seq && d < g.head_dim) ? Load(base + t * stride + col + d) : 0.0f;
  }
}

// The lane's 32 values of row t of a (T, stride) block at column `col`, times `scale` (zeros past
// seq and past head_dim).
template <int kD, typename T>
__device__ void LoadRowValues(float (&v)[kLaneDims], const RowLane<kD>& rl, const T* base,
                              int64_t stride, int64_t col, int64_t t, float scale,
                              const Geometry& g) {
#pragma unroll
  for (int i = 0; i < kLaneDims; ++i) {
    const int d = rl.Dim(i);
    v[i] = (t < g.seq && d < g.head_dim) ? Load(base + t * stride + col + d) * scale : 0.0f;
  }
}

template <int kD, typename T>
__device__ void StoreRowValues(T* dst, const float (&v)[kLaneDims], const RowLane<kD>& rl,
                               float scale, const Geometry& g) {
#pragma unroll
  for (int i = 0; i < kLaneDims; ++i) {
    if (rl.Dim(i) < g.head_dim) Store(dst + rl.Dim(i), v[i] * scale);
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kQueryRows* Tiles<kD>::kRowLanes)
    attention_forward_kernel(const T* qkv, T* out, float* lse, Geometry g) {
  constexpr int kLanes = Tiles<kD>::kRowLanes;
  __shared__ float ks[Tiles<kD>::kKeys * kD];
  __shared__ float vs[Tiles<kD>::kKeys * kD];
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kQueryRows, g.head_dim);
  const RowLane<kD> rl;
  const int64_t t = qt.q0 + rl.row;
  const int64_t warp_last = qt.q0 + rl.warp_row0 + RowLane<kD>::kWarpRows - 1;
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);
  float q[kLaneDims], o[kLaneDims] = {};
  LoadRowValues(q, rl, rows, g.stride, qt.q_col, t, g.scale, g);
  float m = -INFINITY, l = 0.0f;
  const int64_t last = qt.q0 + kQueryRows < g.seq ? qt.q0 + kQueryRows : g.seq;
  const int64_t keys = g.causal ? last : g.seq;
  for (int64_t k0 = 0; k0 < keys; k0 += Tiles<kD>::kKeys) {
    const int tile = static_cast<int>(keys - k0 < Tiles<kD>::kKeys ? keys - k0 : Tiles<kD>::kKeys);
    __syncthreads();
    LoadTile<kD>(ks, kD, rows, g.stride, qt.k_col, k0, tile, g);
    LoadTile<kD>(vs, kD, rows, g.stride, qt.v_col, k0, tile, g);
    __syncthreads();
    const int steps = g.causal ? ClampSteps(warp_last - k0 + 1, tile) : tile;  // warp-uniform
    const int visible = t >= g.seq ? 0 : g.causal ? ClampSteps(t - k0 + 1, tile) : tile;
    for (int j = 0; j < steps; ++j) {
      float partial = 0.0f;
#pragma unroll
      for (int i = 0; i < kLaneDims; ++i) partial = fmaf(q[i], ks[j * kD + rl.Dim(i)], partial);
      const float s = RowSum<kLanes>(partial);
      if (j >= visible) continue;
      if (s > m) {
        const float correction = expf(m - s);
        l *= correction;
#pragma unroll
        for (int i = 0; i < kLaneDims; ++i) o[i] *= correction;
        m = s;
      }
      const float p = expf(s - m);
      l += p;
#pragma unroll
      for (int i = 0; i < kLaneDims; ++i) o[i] = fmaf(p, vs[j * kD + rl.Dim(i)], o[i]);
    }
  }
  if (t >= g.seq) return;
  StoreRowValues(out + (qt.b * g.seq + t) * g.out_stride + qt.q_col, o, rl, 1.0f / l, g);
  if (rl.lane == 0) lse[qt.stat0 + t] = m + logf(l);
}

// delta (B, H, T) = sum_d dout * out.
template <typename T>
__global__ void attention_delta_kernel(const T* out, const T* dout, float* delta, int64_t rows,
                                       Geometry g) {
  const int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;  // over (B, T, H)
  if (idx >= rows) return;
  const int h = static_cast<int>(idx % g.n_head);
  const int64_t bt = idx / g.n_head;
  const int64_t b = bt / g.seq, t = bt % g.seq;
  const T* o = out + bt * g.out_stride + h * g.head_dim;
  const T* d_o = dout + bt * g.out_stride + h * g.head_dim;
  float acc = 0.0f;
  for (int d = 0; d < g.head_dim; ++d) acc = fmaf(Load(d_o + d), Load(o + d), acc);
  delta[(b * g.n_head + h) * g.seq + t] = acc;
}

template <typename T, int kD>
__global__ void __launch_bounds__(kQueryRows* Tiles<kD>::kRowLanes)
    attention_dq_kernel(const T* qkv, const T* dout, const float* lse, const float* delta, T* dqkv,
                        Geometry g) {
  constexpr int kLanes = Tiles<kD>::kRowLanes;
  __shared__ float ks[Tiles<kD>::kKeys * kD];
  __shared__ float vs[Tiles<kD>::kKeys * kD];
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kQueryRows, g.head_dim);
  const RowLane<kD> rl;
  const int64_t t = qt.q0 + rl.row;
  const int64_t warp_last = qt.q0 + rl.warp_row0 + RowLane<kD>::kWarpRows - 1;
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);
  float q[kLaneDims], d_o[kLaneDims], dq[kLaneDims] = {};
  LoadRowValues(q, rl, rows, g.stride, qt.q_col, t, 1.0f, g);
  LoadRowValues(d_o, rl, BatchRows(dout, g, qt.b, g.out_stride), g.out_stride, qt.q_col, t, 1.0f,
                g);
  const int64_t stat = qt.stat0 + t;
  const float row_lse = t < g.seq ? lse[stat] : 0.0f;
  const float row_delta = t < g.seq ? delta[stat] : 0.0f;
  const int64_t last = qt.q0 + kQueryRows < g.seq ? qt.q0 + kQueryRows : g.seq;
  const int64_t keys = g.causal ? last : g.seq;
  for (int64_t k0 = 0; k0 < keys; k0 += Tiles<kD>::kKeys) {
    const int tile = static_cast<int>(keys - k0 < Tiles<kD>::kKeys ? keys - k0 : Tiles<kD>::kKeys);
    __syncthreads();
    LoadTile<kD>(ks, kD, rows, g.stride, qt.k_col, k0, tile, g);
    LoadTile<kD>(vs, kD, rows, g.stride, qt.v_col, k0, tile, g);
    __syncthreads();
    const int steps = g.causal ? ClampSteps(warp_last - k0 + 1, tile) : tile;  // warp-uniform
    const int visible = t >= g.seq ? 0 : g.causal ? ClampSteps(t - k0 + 1, tile) : tile;
    for (int j = 0; j < steps; ++j) {
      float s_partial = 0.0f, dp_partial = 0.0f;
#pragma unroll
      for (int i = 0; i < kLaneDims; ++i) {
        s_partial = fmaf(q[i], ks[j * kD + rl.Dim(i)], s_partial);
        dp_partial = fmaf(d_o[i], vs[j * kD + rl.Dim(i)], dp_partial);
      }
      const float s = RowSum<kLanes>(s_partial), dp = RowSum<kLanes>(dp_partial);
      if (j >= visible) continue;
      const float p = expf(fmaf(s, g.scale, -row_lse));
      const float ds = g.scale * p * (dp - row_delta);
#pragma unroll
      for (int i = 0; i < kLaneDims; ++i) dq[i] = fmaf(ds, ks[j * kD + rl.Dim(i)], dq[i]);
    }
  }
  if (t >= g.seq) return;
  StoreRowValues(dqkv + (qt.b * g.seq + t) * g.stride + qt.q_col, dq, rl, 1.0f, g);
}

template <typename T, int kD>
__global__ void __launch_bounds__(kKeyRows* Tiles<kD>::kRowLanes)
    attention_dkdv_kernel(const T* qkv, const T* dout, const float* lse, const float* delta,
                          T* dqkv, Geometry g) {
  constexpr int kLanes = Tiles<kD>::kRowLanes, kQ = Tiles<kD>::kQueries;
  __shared__ float qs[kQ * kD];
  __shared__ float dos[kQ * kD];
  __shared__ float lse_s[kQ];
  __shared__ float delta_s[kQ];
  const KeyTile kt = KeyTileOf(g, blockIdx.x, kKeyRows, g.head_dim);
  const RowLane<kD> rl;
  const int64_t j = kt.j0 + rl.row;
  const int64_t warp_first = kt.j0 + rl.warp_row0;
  const T* rows = BatchRows(qkv, g, kt.b, g.stride);
  const T* dout_rows = BatchRows(dout, g, kt.b, g.out_stride);
  float k[kLaneDims], v[kLaneDims], dk[kLaneDims] = {}, dv[kLaneDims] = {};
  LoadRowValues(k, rl, rows, g.stride, kt.k_col, j, 1.0f, g);
  LoadRowValues(v, rl, rows, g.stride, kt.v_col, j, 1.0f, g);
  const int64_t first_query = g.causal ? kt.j0 : 0;
  for (int h = kt.kv * g.group; h < (kt.kv + 1) * g.group; ++h) {
    const int64_t q_col = QueryColumn(g, h, g.head_dim);
    const int64_t stat0 = StatRow0(g, kt.b, h);
    for (int64_t i0 = first_query; i0 < g.seq; i0 += kQ) {
      const int tile = static_cast<int>(g.seq - i0 < kQ ? g.seq - i0 : kQ);
      __syncthreads();
      LoadTile<kD>(qs, kD, rows, g.stride, q_col, i0, tile, g);
      LoadTile<kD>(dos, kD, dout_rows, g.out_stride, q_col, i0, tile, g);
      for (int i = threadIdx.x; i < tile; i += blockDim.x) {
        lse_s[i] = lse[stat0 + i0 + i];
        delta_s[i] = delta[stat0 + i0 + i];
      }
      __syncthreads();
      // Under the causal mask no lane of the warp sees the queries before its first key row.
      const int first = g.causal ? ClampSteps(warp_first - i0, tile) : 0;  // warp-uniform
      for (int i = first; i < tile; ++i) {
        float s_partial = 0.0f, dp_partial = 0.0f;
#pragma unroll
        for (int x = 0; x < kLaneDims; ++x) {
          s_partial = fmaf(qs[i * kD + rl.Dim(x)], k[x], s_partial);
          dp_partial = fmaf(dos[i * kD + rl.Dim(x)], v[x], dp_partial);
        }
        const float s = RowSum<kLanes>(s_partial), dp = RowSum<kLanes>(dp_partial);
        if (j >= g.seq || (g.causal && i0 + i < j)) continue;
        const float p = expf(fmaf(s, g.scale, -lse_s[i]));
        const float ds = g.scale * p * (dp - delta_s[i]);
#pragma unroll
        for (int x = 0; x < kLaneDims; ++x) {
          dv[x] = fmaf(p, dos[i * kD + rl.Dim(x)], dv[x]);
          dk[x] = fmaf(ds, qs[i * kD + rl.Dim(x)], dk[x]);
        }
      }
    }
  }
  if (j >= g.seq) return;
  T* dst = dqkv + (kt.b * g.seq + j) * g.stride;
  StoreRowValues(dst + kt.k_col, dk, rl, 1.0f, g);
  StoreRowValues(dst + kt.v_col, dv, rl, 1.0f, g);
}

// Calls fn(std::integral_constant<int, kD>) with the smallest supported bound >= head_dim.
template <typename Fn>
void DispatchHeadDim(int head_dim, Fn&& fn) {
  if (head_dim <= 32) {
    fn(std::integral_constant<int, 32>{});
  } else if (head_dim <= 64) {
    fn(std::integral_constant<int, 64>{});
  } else {
    fn(std::integral_constant<int, 128>{});
  }
}

// Note [Choosing the attention kernels]
// The tensor-core kernels run every launch they can take: bf16 / f16 storage, head_dim 64 or 128,
// 16-byte aligned tensors, enough shared memory per block. They are the register-resident
// mma.sync kernels — the forward (attention_mma.cu, Note [Register-resident attention forward])
// and, at head_dim 64, the backward (attention_mma_backward.cu, Note [Register-resident attention
// backward]) — and otherwise the wmma kernels (attention_tc.cu, Note [Tensor-core attention]).
// Everything else — f32, other head dims — runs the simple kernels above. The forward and the
// backward choose independently; all schemes compute the same math (their out and lse are
// interchangeable inputs of either backward), so any mix is correct. KILN_CUDA_ATTENTION (read once
// per process) is the escape hatch should a path misbehave on some device: "simple" forces the
// simple kernels everywhere, "wmma" the wmma kernels where the tensor cores apply. Unset, empty or
// "auto" mean the choice above; any other value is reported once on stderr and treated as "auto".
// Tests force each path through AttentionLaunch::impl.
enum class EnvironmentChoice { kAuto, kSimple, kWmma };

EnvironmentChoice AttentionEnvironment() {
  static const EnvironmentChoice choice = [] {
    const char* v = std::getenv("KILN_CUDA_ATTENTION");
    if (v == nullptr || std::strcmp(v, "") == 0 || std::strcmp(v, "auto") == 0) {
      return EnvironmentChoice::kAuto;
    }
    if (std::strcmp(v, "simple") == 0) return EnvironmentChoice::kSimple;
    if (std::strcmp(v, "wmma") == 0) return EnvironmentChoice::kWmma;
    std::fprintf(stderr, "KILN_CUDA_ATTENTION=%s is not 'simple', 'wmma' or 'auto'; using 'auto'\n",
                 v);
    return EnvironmentChoice::kAuto;
  }();
  return choice;
}

bool UseTensorCores(const AttentionLaunch& a) {
  switch (a.impl) {
    case AttentionImpl::kSimple:
      return false;
    case AttentionImpl::kTensorCore:
    case AttentionImpl::kTensorCoreWmma:
      return true;  // the tensor-core launch aborts with the reason if it cannot take `a`
    case AttentionImpl::kAuto:
      break;
  }
  return AttentionEnvironment() != EnvironmentChoice::kSimple && AttentionTensorCoreAvailable(a);
}

bool UseWmma(const AttentionLaunch& a) {
  return a.impl == AttentionImpl::kTensorCoreWmma ||
         (a.impl == AttentionImpl::kAuto && AttentionEnvironment() == EnvironmentChoice::kWmma);
}

}  // namespace

void LaunchAttentionForward(const AttentionLaunch& a, StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  if (UseTensorCores(a)) {
    if (UseWmma(a)) {
      LaunchAttentionForwardTensorCore(a, stream);
    } else {
      LaunchAttentionForwardMma(a, stream);
    }
    return;
  }
  const FlatTileGrid grid = MakeFlatTileGrid(a.seq, kQueryRows, a.batch * a.n_head);
  Geometry g = MakeGeometry(a);
  g.tiles = static_cast<int>(grid.tiles);
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    DispatchHeadDim(a.head_dim, [&](auto bound) {
      constexpr int kD = decltype(bound)::value;
      Launch(attention_forward_kernel<T, kD>, grid.blocks, kQueryRows * Tiles<kD>::kRowLanes, 0,
             AsStream(stream), static_cast<const T*>(a.qkv), static_cast<T*>(a.out), a.lse, g);
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

size_t AttentionBackwardWorkspaceBytes(int64_t batch, int n_head, int64_t seq) {
  return static_cast<size_t>(batch * n_head * seq) * sizeof(float);
}

void LaunchAttentionBackward(const AttentionLaunch& a, void* workspace, StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  const Geometry g = MakeGeometry(a);
  float* delta = static_cast<float*>(workspace);  // (B, H, T)
  const int64_t rows = a.batch * a.seq * a.n_head;
  DispatchFloat(a.type, [&](auto t) {
    using T = decltype(t);
    const T* qkv = static_cast<const T*>(a.qkv);
    const T* dout = static_cast<const T*>(a.dout);
    T* dqkv = static_cast<T*>(a.dqkv);
    Launch(attention_delta_kernel<T>, static_cast<unsigned>((rows + 255) / 256), 256, 0,
           AsStream(stream), static_cast<const T*>(a.out), dout, delta, rows, g);
    if (UseTensorCores(a)) {
      if (UseWmma(a) || !AttentionBackwardMmaTakes(a)) {
        LaunchAttentionBackwardTensorCore(a, delta, stream);
      } else {
        LaunchAttentionBackwardMma(a, delta, stream);
      }
      return;
    }
    DispatchHeadDim(a.head_dim, [&](auto bound) {
      constexpr int kD = decltype(bound)::value;
      const FlatTileGrid q_grid = MakeFlatTileGrid(a.seq, kQueryRows, a.batch * a.n_head);
      Geometry gq = g;
      gq.tiles = static_cast<int>(q_grid.tiles);
      constexpr int kLanes = Tiles<kD>::kRowLanes;
      Launch(attention_dq_kernel<T, kD>, q_grid.blocks, kQueryRows * kLanes, 0, AsStream(stream),
             qkv, dout, a.lse, delta, dqkv, gq);
      const FlatTileGrid kv_grid = MakeFlatTileGrid(a.seq, kKeyRows, a.batch * a.n_kv_head);
      Geometry gkv = g;
      gkv.tiles = static_cast<int>(kv_grid.tiles);
      Launch(attention_dkdv_kernel<T, kD>, kv_grid.blocks, kKeyRows * kLanes, 0, AsStream(stream),
             qkv, dout, a.lse, delta, dqkv, gkv);
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
