// Tensor-core flash attention (FlashAttention-2 style) for bf16 / f16 storage and head_dim 64 or
// 128, on packed qkv with grouped-query heads: the forward (out and lse) and the deterministic
// backward (dq; dk and dv) with nvcuda::wmma 16x16x16 fragments and f32 accumulation. Same
// contract as the simple kernels of attention.cu, which stay the fallback for everything else.
// See Note [Tensor-core attention] and Note [Tensor-core attention tiles].
#if defined(KILN_CUDA_EMULATION)
#include "kernels/cuda/emulation/wmma.h"
#else
#include <mma.h>
#endif

#include "kernels/cuda/attention_geometry.h"
#include "kernels/cuda/attention_tc_layout.h"
#include "kernels/cuda/attention_tc_tiles.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch_geometry.h"

namespace kiln::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using attention_tc::AllowSharedBytes;
using attention_tc::CopyTile;
using attention_tc::DispatchTensorCore;
using attention_tc::kFrag;
using attention_tc::kThreads;
using attention_tc::kTile;
using attention_tc::kWarpRows;
using attention_tc::Ld16;
using attention_tc::Ld32;

// Note [Tensor-core attention]
// The math is that of Note [CUDA attention scheme]: s = scale q.k over visible keys, where key j
// is visible to query i when j < T and (not causal or j <= i); lse = m + log(l) per query row;
// the backward recomputes P = exp(s - lse) and with delta = rowsum(dout * out) forms
// dS = scale P (dP - delta), dP = dout.v. Differences from the simple kernels are rounding only:
// q.k is a product of storage-type inputs summed in f32 on the tensor cores (the simple kernel
// sums the same products in f32 on the CUDA cores), and P and dS are rounded to the storage type
// before they feed the next matmul (P V, P^T dout, dS k, dS^T q), as FlashAttention does.
//
// Forward, a block per (b, h, 64 query rows): for each key/value tile (tiles wholly above the
// diagonal are skipped when causal) S = Q K^T into shared f32; each warp runs the online softmax
// on its 16 rows (running max m and sum l held by lane r for row r, read with shuffles), writes P
// in the storage type and rescales its rows of the f32 O accumulator in shared memory by
// exp(m_old - m_new); then O += P V on the tensor cores (O's fragments loaded from and stored back
// to shared memory, since wmma's accumulator layout is opaque and cannot be rescaled by row in
// registers). At the end out = O / l in the storage type and lse = m + log(l).
// Backward: dq, a block per (b, h, 64 query rows) streaming key tiles: S = Q K^T, dP = dout V^T,
// dS as above, dq += dS K (in registers). dk/dv, a block per (b, kv head, 64 key rows) streaming
// the query tiles of every query head of the group (from the key tile's own diagonal on when
// causal): S^T = K Q^T, dP^T = V dout^T, then dv += P^T dout and dk += dS^T Q in registers. Every
// element of dqkv has exactly one owner (q columns: the dq block of its query tile; k and v
// columns: the dk/dv block of its key tile) that adds its terms in a fixed order, so the backward
// needs no atomics, no zeroing, and repeats bit for bit.
// Masking: tiles are loaded with rows past T as zeros (so no garbage — possibly NaN — enters a
// product), and every score that is not visible gets P = 0 and dS = 0 explicitly rather than
// through exp(-inf); query rows past T are computed on zeros and never written. A row whose keys
// are all masked (impossible for T >= 1: key 0 is visible to every query) would give out = 0 and
// lse = -inf rather than NaN: the running max is taken as 0 while it is still -inf.

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

// dst (kTile) = src[r0 + i] of one (b, h) row of lse or delta (B, H, T); zeros past seq.
__device__ void CopyRowStats(float* dst, const float* src, int64_t r0, int64_t seq) {
  for (int i = threadIdx.x; i < kTile; i += kThreads) dst[i] = r0 + i < seq ? src[r0 + i] : 0.0f;
}

// Rows [16 warp, 16 warp + 16) of s (kTile, Ld32(kTile)) f32 = a b^T, with a and b (kTile, kD)
// storage-type tiles: s[i][j] = sum_d a[i][d] b[j][d].
template <int kD, typename T>
__device__ void WarpScores(const T* a, const T* b, float* s, int warp) {
  constexpr int kN = kTile / kFrag;
  FragC acc[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
  for (int k = 0; k < kD; k += kFrag) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, a + warp * kWarpRows * Ld16(kD) + k, Ld16(kD));
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      FragBCol<T> fb;  // (k, n) = b[n][k]: b's rows read as columns
      wmma::load_matrix_sync(fb, b + n * kFrag * Ld16(kD) + k, Ld16(kD));
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    wmma::store_matrix_sync(s + warp * kWarpRows * Ld32(kTile) + n * kFrag, acc[n], Ld32(kTile),
                            wmma::mem_row_major);
  }
}

// acc (16, kD) += rows [16 warp, 16 warp + 16) of a (kTile, Ld16(kTile)) times b (kTile, Ld16(kD)),
// both storage type: acc[i][d] += sum_j a[i][j] b[j][d].
template <int kD, typename T>
__device__ void WarpAccumulate(FragC (&acc)[kD / kFrag], const T* a, const T* b, int warp) {
#pragma unroll
  for (int k = 0; k < kTile; k += kFrag) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, a + warp * kWarpRows * Ld16(kTile) + k, Ld16(kTile));
#pragma unroll
    for (int n = 0; n < kD / kFrag; ++n) {
      FragBRow<T> fb;
      wmma::load_matrix_sync(fb, b + k * Ld16(kD) + n * kFrag, Ld16(kD));
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Stores the warp's (16, kD) accumulator into rows [16 warp, +16) of stage (kTile, Ld32(kD)) f32.
template <int kD>
__device__ void WarpStage(const FragC (&acc)[kD / kFrag], float* stage, int warp) {
#pragma unroll
  for (int n = 0; n < kD / kFrag; ++n) {
    wmma::store_matrix_sync(stage + warp * kWarpRows * Ld32(kD) + n * kFrag, acc[n], Ld32(kD),
                            wmma::mem_row_major);
  }
}

// Writes the warp's staged rows (those below seq) to the head at column `col` of a
// (T, stride) matrix in the storage type. Call after __syncwarp().
template <int kD, typename T>
__device__ void WarpWriteRows(const float* stage, T* base, int64_t stride, int64_t col, int64_t r0,
                              int64_t seq, int warp, int lane) {
  for (int r = 0; r < kWarpRows; ++r) {
    const int row = warp * kWarpRows + r;
    if (r0 + row >= seq) break;
    T* dst = base + (r0 + row) * stride + col;
    for (int d = lane; d < kD; d += 32) Store(dst + d, stage[row * Ld32(kD) + d]);
  }
}

// Whether query i sees key j (Note [Tensor-core attention]: masking).
__device__ __forceinline__ bool Visible(int64_t i, int64_t j, const Geometry& g) {
  return attention_tc::Visible(i, j, g.seq, g.causal);
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    attention_tc_forward_kernel(const T* qkv, T* out, float* lse, Geometry g) {
  constexpr attention_tc::ForwardLayout L = attention_tc::MakeForwardLayout(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  T* qs = reinterpret_cast<T*>(smem + L.q);          // (64, D) this block's queries
  T* ks = reinterpret_cast<T*>(smem + L.k);          // (64, D) current key tile
  T* vs = reinterpret_cast<T*>(smem + L.v);          // (64, D) current value tile
  float* ss = reinterpret_cast<float*>(smem + L.s);  // (64, 64) scores
  T* ps = reinterpret_cast<T*>(smem + L.p);          // (64, 64) probabilities
  float* os = reinterpret_cast<float*>(smem + L.o);  // (64, D) unnormalized output

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);  // (T, stride)

  CopyTile<kD>(qs, rows, g.stride, qt.q_col, qt.q0, g.seq);
  for (int e = threadIdx.x; e < kTile * Ld32(kD); e += kThreads) os[e] = 0.0f;
  // Lane r < 16 holds the running max and sum of the warp's row r.
  float m_mine = -INFINITY, l_mine = 0.0f;

  const int64_t keys = attention_tc::KeyEnd(qt.q0, g.seq, g.causal);
  for (int64_t k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();  // every warp is done with the previous k and v tiles
    CopyTile<kD>(ks, rows, g.stride, qt.k_col, k0, g.seq);
    CopyTile<kD>(vs, rows, g.stride, qt.v_col, k0, g.seq);
    __syncthreads();
    WarpScores<kD>(qs, ks, ss, warp);
    __syncwarp();
    for (int r = 0; r < kWarpRows; ++r) {
      const int row = warp * kWarpRows + r;
      const int64_t i = qt.q0 + row;
      const float* srow = ss + row * Ld32(kTile);
      float x[kTile / 32];
      float tile_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < kTile / 32; ++c) {
        const int col = lane + 32 * c;
        x[c] = Visible(i, k0 + col, g) ? srow[col] * g.scale : -INFINITY;
        tile_max = fmaxf(tile_max, x[c]);
      }
      tile_max = WarpMax(tile_max);
      const float m_old = __shfl_sync(kFullMask, m_mine, r);
      const float l_old = __shfl_sync(kFullMask, l_mine, r);
      const float m_new = fmaxf(m_old, tile_max);
      const float ref = m_new == -INFINITY ? 0.0f : m_new;  // no inf - inf while all masked
      const float alpha = expf(m_old - ref);                // 0 on the first visible tile
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < kTile / 32; ++c) {
        const float p = x[c] == -INFINITY ? 0.0f : expf(x[c] - ref);
        Store(ps + row * Ld16(kTile) + lane + 32 * c, p);
        sum += p;
      }
      sum = WarpSum(sum);
      float* orow = os + row * Ld32(kD);
      for (int d = lane; d < kD; d += 32) orow[d] *= alpha;
      if (lane == r) {
        m_mine = m_new;
        l_mine = l_old * alpha + sum;
      }
    }
    __syncwarp();  // p and the rescaled o rows are visible to the whole warp
    FragC o[kD / kFrag];
#pragma unroll
    for (int n = 0; n < kD / kFrag; ++n) {
      wmma::load_matrix_sync(o[n], os + warp * kWarpRows * Ld32(kD) + n * kFrag, Ld32(kD),
                             wmma::mem_row_major);
    }
    WarpAccumulate<kD>(o, ps, vs, warp);
    WarpStage<kD>(o, os, warp);
  }
  __syncwarp();
  T* out_rows = BatchRows(out, g, qt.b, g.out_stride);  // (T, H D)
  float* lse_row = lse + qt.stat0;
  for (int r = 0; r < kWarpRows; ++r) {
    const int row = warp * kWarpRows + r;
    const int64_t i = qt.q0 + row;
    const float m = __shfl_sync(kFullMask, m_mine, r);
    const float l = __shfl_sync(kFullMask, l_mine, r);
    if (i >= g.seq) break;  // warp-uniform: later rows are past T too
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* dst = out_rows + i * g.out_stride + qt.q_col;
    for (int d = lane; d < kD; d += 32) Store(dst + d, os[row * Ld32(kD) + d] * inv);
    if (lane == 0) lse_row[i] = l > 0.0f ? m + logf(l) : -INFINITY;
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    attention_tc_dq_kernel(const T* qkv, const T* dout, const float* lse, const float* delta,
                           T* dqkv, Geometry g) {
  constexpr attention_tc::DqLayout L = attention_tc::MakeDqLayout(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  T* qs = reinterpret_cast<T*>(smem + L.q);                   // (64, D) this block's queries
  T* dos = reinterpret_cast<T*>(smem + L.dout);               // (64, D) their output gradients
  T* ks = reinterpret_cast<T*>(smem + L.k);                   // (64, D) current key tile
  T* vs = reinterpret_cast<T*>(smem + L.v);                   // (64, D) current value tile
  float* ss = reinterpret_cast<float*>(smem + L.s);           // (64, 64) scores
  float* dps = reinterpret_cast<float*>(smem + L.dp);         // (64, 64) dout.v
  T* dss = reinterpret_cast<T*>(smem + L.ds);                 // (64, 64) dS
  float* lse_s = reinterpret_cast<float*>(smem + L.lse);      // (64)
  float* delta_s = reinterpret_cast<float*>(smem + L.delta);  // (64)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);            // (T, stride)
  const T* dout_rows = BatchRows(dout, g, qt.b, g.out_stride);  // (T, H D)

  CopyTile<kD>(qs, rows, g.stride, qt.q_col, qt.q0, g.seq);
  CopyTile<kD>(dos, dout_rows, g.out_stride, qt.q_col, qt.q0, g.seq);
  CopyRowStats(lse_s, lse + qt.stat0, qt.q0, g.seq);
  CopyRowStats(delta_s, delta + qt.stat0, qt.q0, g.seq);
  FragC dq[kD / kFrag];
#pragma unroll
  for (int n = 0; n < kD / kFrag; ++n) wmma::fill_fragment(dq[n], 0.0f);

  const int64_t keys = attention_tc::KeyEnd(qt.q0, g.seq, g.causal);
  for (int64_t k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();
    CopyTile<kD>(ks, rows, g.stride, qt.k_col, k0, g.seq);
    CopyTile<kD>(vs, rows, g.stride, qt.v_col, k0, g.seq);
    __syncthreads();
    WarpScores<kD>(qs, ks, ss, warp);
    WarpScores<kD>(dos, vs, dps, warp);
    __syncwarp();
    for (int e = lane; e < kWarpRows * kTile; e += 32) {
      const int row = warp * kWarpRows + e / kTile, col = e % kTile;
      const bool visible = Visible(qt.q0 + row, k0 + col, g);
      const float p =
          visible ? expf(fmaf(ss[row * Ld32(kTile) + col], g.scale, -lse_s[row])) : 0.0f;
      const float ds = visible ? g.scale * p * (dps[row * Ld32(kTile) + col] - delta_s[row]) : 0.0f;
      Store(dss + row * Ld16(kTile) + col, ds);
    }
    __syncwarp();
    WarpAccumulate<kD>(dq, dss, ks, warp);
  }
  __syncthreads();  // the stage overlaps every warp's score rows
  float* stage = reinterpret_cast<float*>(smem + L.stage);  // (64, D) f32
  WarpStage<kD>(dq, stage, warp);
  __syncwarp();
  WarpWriteRows<kD>(stage, BatchRows(dqkv, g, qt.b, g.stride), g.stride, qt.q_col, qt.q0, g.seq,
                    warp, lane);
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    attention_tc_dkdv_kernel(const T* qkv, const T* dout, const float* lse, const float* delta,
                             T* dqkv, Geometry g) {
  constexpr attention_tc::DkdvLayout L = attention_tc::MakeDkdvLayout(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  T* ks = reinterpret_cast<T*>(smem + L.k);                   // (64, D) this block's keys
  T* vs = reinterpret_cast<T*>(smem + L.v);                   // (64, D) their values
  T* qs = reinterpret_cast<T*>(smem + L.q);                   // (64, D) current query tile
  T* dos = reinterpret_cast<T*>(smem + L.dout);               // (64, D) its output gradients
  float* sts = reinterpret_cast<float*>(smem + L.st);         // (64 keys, 64 queries) scores
  float* dpts = reinterpret_cast<float*>(smem + L.dpt);       // (64 keys, 64 queries) v.dout
  T* pts = reinterpret_cast<T*>(smem + L.pt);                 // (64 keys, 64 queries) P^T
  T* dsts = reinterpret_cast<T*>(smem + L.dst);               // (64 keys, 64 queries) dS^T
  float* lse_s = reinterpret_cast<float*>(smem + L.lse);      // (64) of the query tile
  float* delta_s = reinterpret_cast<float*>(smem + L.delta);  // (64) of the query tile

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KeyTile kt = KeyTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, kt.b, g.stride);            // (T, stride)
  const T* dout_rows = BatchRows(dout, g, kt.b, g.out_stride);  // (T, H D)

  CopyTile<kD>(ks, rows, g.stride, kt.k_col, kt.j0, g.seq);
  CopyTile<kD>(vs, rows, g.stride, kt.v_col, kt.j0, g.seq);
  FragC dk[kD / kFrag], dv[kD / kFrag];
#pragma unroll
  for (int n = 0; n < kD / kFrag; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  const int64_t first_query = attention_tc::FirstQuery(kt.j0, g.causal);
  for (int h = kt.kv * g.group; h < (kt.kv + 1) * g.group; ++h) {
    const int64_t q_col = QueryColumn(g, h, kD);
    const int64_t stat0 = StatRow0(g, kt.b, h);
    for (int64_t i0 = first_query; i0 < g.seq; i0 += kTile) {
      __syncthreads();
      CopyTile<kD>(qs, rows, g.stride, q_col, i0, g.seq);
      CopyTile<kD>(dos, dout_rows, g.out_stride, q_col, i0, g.seq);
      CopyRowStats(lse_s, lse + stat0, i0, g.seq);
      CopyRowStats(delta_s, delta + stat0, i0, g.seq);
      __syncthreads();
      WarpScores<kD>(ks, qs, sts, warp);
      WarpScores<kD>(vs, dos, dpts, warp);
      __syncwarp();
      for (int e = lane; e < kWarpRows * kTile; e += 32) {
        const int row = warp * kWarpRows + e / kTile, col = e % kTile;  // key row, query column
        const bool visible = Visible(i0 + col, kt.j0 + row, g);
        const float p =
            visible ? expf(fmaf(sts[row * Ld32(kTile) + col], g.scale, -lse_s[col])) : 0.0f;
        const float ds =
            visible ? g.scale * p * (dpts[row * Ld32(kTile) + col] - delta_s[col]) : 0.0f;
        Store(pts + row * Ld16(kTile) + col, p);
        Store(dsts + row * Ld16(kTile) + col, ds);
      }
      __syncwarp();
      WarpAccumulate<kD>(dv, pts, dos, warp);
      WarpAccumulate<kD>(dk, dsts, qs, warp);
    }
  }
  __syncthreads();  // the stage overlaps every warp's score rows
  float* stage = reinterpret_cast<float*>(smem + L.stage);  // (64, D) f32
  T* dst_rows = BatchRows(dqkv, g, kt.b, g.stride);
  WarpStage<kD>(dv, stage, warp);
  __syncwarp();
  WarpWriteRows<kD>(stage, dst_rows, g.stride, kt.v_col, kt.j0, g.seq, warp, lane);
  __syncwarp();  // the warp has read its staged dv rows before dk overwrites them
  WarpStage<kD>(dk, stage, warp);
  __syncwarp();
  WarpWriteRows<kD>(stage, dst_rows, g.stride, kt.k_col, kt.j0, g.seq, warp, lane);
}

void CheckTakes(const AttentionLaunch& a, const char* what) {
  if (!AttentionTensorCoreAvailable(a)) {
    std::fprintf(stderr,
                 "%s: the tensor-core attention cannot take type %d head_dim %d (needs bf16/f16, "
                 "head_dim 64 or 128, 16-byte aligned tensors, sm_80+ shared memory)\n",
                 what, static_cast<int>(a.type), a.head_dim);
    std::abort();
  }
}

}  // namespace

bool AttentionTensorCoreAvailable(const AttentionLaunch& a) {
  if (!attention_tc::LaunchFits(a)) return false;
  int device = 0, major = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    cudaGetLastError();  // do not leave the failed query for the next launch check to report
    return false;
  }
  return major >= 8 && static_cast<size_t>(optin) >= attention_tc::MaxSharedBytes(a.head_dim);
}

void LaunchAttentionForwardTensorCore(const AttentionLaunch& a, StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  CheckTakes(a, "LaunchAttentionForwardTensorCore");
  const FlatTileGrid grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_head);
  Geometry g = MakeGeometry(a);
  g.tiles = static_cast<int>(grid.tiles);
  DispatchTensorCore(a, [&](auto t, auto dim) {
    using T = decltype(t);
    constexpr int kD = decltype(dim)::value;
    constexpr size_t kBytes = attention_tc::MakeForwardLayout(kD).total;
    AllowSharedBytes(attention_tc_forward_kernel<T, kD>, kBytes);
    Launch(attention_tc_forward_kernel<T, kD>, grid.blocks, kThreads, kBytes, AsStream(stream),
           static_cast<const T*>(a.qkv), static_cast<T*>(a.out), a.lse, g);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void LaunchAttentionBackwardTensorCore(const AttentionLaunch& a, const float* delta,
                                       StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  CheckTakes(a, "LaunchAttentionBackwardTensorCore");
  const Geometry g = MakeGeometry(a);
  const FlatTileGrid q_grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_head);
  const FlatTileGrid kv_grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_kv_head);
  DispatchTensorCore(a, [&](auto t, auto dim) {
    using T = decltype(t);
    constexpr int kD = decltype(dim)::value;
    const T* qkv = static_cast<const T*>(a.qkv);
    const T* dout = static_cast<const T*>(a.dout);
    T* dqkv = static_cast<T*>(a.dqkv);
    Geometry gq = g;
    gq.tiles = static_cast<int>(q_grid.tiles);
    constexpr size_t kDqBytes = attention_tc::MakeDqLayout(kD).total;
    AllowSharedBytes(attention_tc_dq_kernel<T, kD>, kDqBytes);
    Launch(attention_tc_dq_kernel<T, kD>, q_grid.blocks, kThreads, kDqBytes, AsStream(stream), qkv,
           dout, a.lse, delta, dqkv, gq);
    KILN_CUDA_CHECK_LAUNCH();
    Geometry gkv = g;
    gkv.tiles = static_cast<int>(kv_grid.tiles);
    constexpr size_t kDkdvBytes = attention_tc::MakeDkdvLayout(kD).total;
    AllowSharedBytes(attention_tc_dkdv_kernel<T, kD>, kDkdvBytes);
    Launch(attention_tc_dkdv_kernel<T, kD>, kv_grid.blocks, kThreads, kDkdvBytes, AsStream(stream),
           qkv, dout, a.lse, delta, dqkv, gkv);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
