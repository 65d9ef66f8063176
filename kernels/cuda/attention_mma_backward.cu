// The tensor-core attention backward with its state in registers on mma.sync
// (kernels/cuda/mma.cuh): dq, and dk / dv, for bf16 / f16 storage and head_dim 64, on packed qkv
// with grouped-query heads, deterministic (every element of dqkv has one owner adding its terms in
// a fixed order). The default backward where it applies (Note [Choosing the attention kernels] in
// attention.cu); head dim 128 stays on the wmma kernels (attention_tc.cu). See Note
// [Register-resident attention backward].
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/attention_geometry.h"
#include "kernels/cuda/attention_tc_layout.h"
#include "kernels/cuda/attention_tc_tiles.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch_geometry.h"
#include "kernels/cuda/mma.cuh"

namespace kiln::kernels::cuda {
namespace {

using attention_tc::kThreads;
using attention_tc::kTile;
using attention_tc::kWarpRows;
using attention_tc::Ld16;

// Note [Register-resident attention backward]
// The math and the work split are Note [Tensor-core attention]'s (P = exp(s - lse) recomputed,
// dS = scale P (dP - delta), delta = rowsum(dout * out); a dq block per (b, h, 64 query rows)
// streaming key tiles, a dk/dv block per (b, kv head, 64 key rows) streaming the query tiles of
// every query head of its group); what changes is that scores, dP, P and dS never leave
// registers. Each warp owns 16 rows of its block's tile: query rows in dq, key rows in dk/dv.
// Its row operands (q and dout, or k and v) are loaded into A fragments once; per streamed tile
// it computes the two 16 x 64 products (S and dP, or S^T and dP^T) as accumulator tiles, turns
// them elementwise into P and dS rounded to the storage type straight into A fragments (Note
// [mma.sync fragments]: two adjacent accumulator tiles are one A fragment), and accumulates
// dq += dS K, or dv += P^T dout and dk += dS^T q, in registers. lse and delta are read per row
// (dq: the lane's rows g and g + 8) or per column (dk/dv: staged in shared memory per query tile).
// Head dim 128 would need twice the accumulators (dk and dv alone are 128 floats a lane) and
// would spill: it keeps the wmma kernels.
using attention_tc::kLog2e;

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    attention_mma_dq_kernel(const T* qkv, const T* dout, const float* lse, const float* delta,
                            T* dqkv, Geometry g) {
  constexpr int kChunksD = kD / 16, kTilesD = kD / 8, kTilesKey = kTile / 8, kLd = Ld16(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  // Four (64, D + 8) tiles: this block's queries, their output gradients, then a key and a value
  // tile. Once every warp holds the queries and dout as fragments, their two tiles are free and
  // serve as the second stage of the key / value prefetch (Note [Prefetched key and value tiles]
  // in attention_mma.cu): stage 0 is tiles 2 and 3, stage 1 tiles 0 and 1 — no extra memory.
  constexpr int kTileElems = kTile * kLd;
  T* qs = reinterpret_cast<T*>(smem);
  T* dos = qs + kTileElems;
  const auto keys_of = [&](int stage) { return qs + (2 - 2 * stage) * kTileElems; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, lg = lane / 4, lt = lane % 4;
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);            // (T, stride)
  const T* dout_rows = BatchRows(dout, g, qt.b, g.out_stride);  // (T, H D)
  const float scale2 = g.scale * kLog2e;

  // Queries, dout and the first key / value tile as one group.
  const int64_t keys = attention_tc::KeyEnd(qt.q0, g.seq, g.causal);
  const int tiles = static_cast<int>((keys + kTile - 1) / kTile);
  attention_tc::CopyTileAsync<kD>(qs, rows, g.stride, qt.q_col, qt.q0, g.seq);
  attention_tc::CopyTileAsync<kD>(dos, dout_rows, g.out_stride, qt.q_col, qt.q0, g.seq);
  if (tiles > 0) {
    attention_tc::CopyKeyValueTilesAsync<kD>(keys_of(0), rows, g.stride, qt.k_col, qt.v_col, 0,
                                             g.seq);
  }
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  const int r0 = warp * kWarpRows;
  uint32_t qa[kChunksD][4], doa[kChunksD][4];
#pragma unroll
  for (int c = 0; c < kChunksD; ++c) {
    mma::LoadA(qa[c], qs, kLd, r0, 16 * c);
    mma::LoadA(doa[c], dos, kLd, r0, 16 * c);
  }
  const int64_t row[2] = {qt.q0 + r0 + lg, qt.q0 + r0 + lg + 8};
  float lse2[2], dl[2];  // the rows' lse in log2 units, and delta
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    lse2[i] = row[i] < g.seq ? lse[qt.stat0 + row[i]] * kLog2e : 0.0f;
    dl[i] = row[i] < g.seq ? delta[qt.stat0 + row[i]] : 0.0f;
  }
  float dq[kTilesD][4];
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

  __syncthreads();  // every warp holds its fragments: tiles 0 and 1 are stage 1 from here

  for (int tile = 0; tile < tiles; ++tile) {
    const int64_t k0 = static_cast<int64_t>(tile) * kTile;
    const T* ks = keys_of(tile % 2);
    const T* vs = ks + kTileElems;
    attention_tc::AdvanceStages(tile, tiles, [&](int next) {
      attention_tc::CopyKeyValueTilesAsync<kD>(keys_of(next % 2), rows, g.stride, qt.k_col,
                                               qt.v_col, k0 + kTile, g.seq);
    });
    // Note [Masking only the edge tiles] (attention_mma.cu): dS unmasked, zeroed where invisible
    // on the tiles that have such pairs.
    const bool edge = !attention_tc::TileVisible(qt.q0, k0, g.seq, g.causal);  // block-uniform
    uint32_t dsa[kTilesKey / 2][4];  // dS (16 x 64) as A fragments, 16 keys each
#pragma unroll
    for (int pair = 0; pair < kTilesKey / 2; ++pair) {
      float ds[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * pair + half;  // keys [8 j, 8 j + 8) of the tile
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma::ProductWithRows<T>(s, qa, ks, kLd, 8 * j);    // Q K^T
        mma::ProductWithRows<T>(dp, doa, vs, kLd, 8 * j);  // dout V^T
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = mma::FastExp2(fmaf(s[e], scale2, -lse2[e / 2]));
          ds[half][e] = g.scale * p * (dp[e] - dl[e / 2]);
        }
        if (edge) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t key = k0 + 8 * j + 2 * lt + (e % 2);
            if (!attention_tc::Visible(row[e / 2], key, g.seq, g.causal)) ds[half][e] = 0.0f;
          }
        }
      }
      mma::AccumulatorsToA<T>(dsa[pair], ds[0], ds[1]);
    }
    mma::AccumulateProduct<T>(dq, dsa, ks, kLd);  // dq (16 x D) += dS K
    __syncthreads();  // every warp is done with this stage before the next prefetch overwrites it
  }
  T* dst = dqkv + (static_cast<int64_t>(qt.b) * g.seq + qt.q0 + r0) * g.stride + qt.q_col;
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) {
    mma::StoreAccumulator(dst + 8 * n, g.stride, dq[n], 1.0f, 1.0f, row[0] < g.seq, row[1] < g.seq);
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    attention_mma_dkdv_kernel(const T* qkv, const T* dout, const float* lse, const float* delta,
                              T* dqkv, Geometry g) {
  constexpr int kChunksD = kD / 16, kTilesD = kD / 8, kTilesQuery = kTile / 8, kLd = Ld16(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  // Four (64, D + 8) tiles — this block's keys, their values, a query tile, its dout — then two
  // stages of the query tile's lse and delta (64 each). Once every warp holds the keys and values
  // as fragments, tiles 0 and 1 are the second stage of the query / dout prefetch (Note
  // [Prefetched key and value tiles] in attention_mma.cu, here streaming queries): stage 0 is
  // tiles 2 and 3, stage 1 tiles 0 and 1.
  constexpr int kTileElems = kTile * kLd;
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kTileElems;
  float* stats = reinterpret_cast<float*>(ks + 4 * kTileElems);
  const auto queries_of = [&](int stage) { return ks + (2 - 2 * stage) * kTileElems; };
  const auto stats_of = [&](int stage) { return stats + stage * 2 * kTile; };  // lse, delta

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, lg = lane / 4, lt = lane % 4;
  const KeyTile kt = KeyTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, kt.b, g.stride);            // (T, stride)
  const T* dout_rows = BatchRows(dout, g, kt.b, g.out_stride);  // (T, H D)
  const float scale2 = g.scale * kLog2e;

  // Step s takes query head kt.kv * group + s / per_head and its query tile s % per_head (from
  // the first one that sees these keys): every query head of the group, one after the other.
  const int64_t first_query = attention_tc::FirstQuery(kt.j0, g.causal);
  const int per_head = static_cast<int>((g.seq - first_query + kTile - 1) / kTile);
  const int steps = g.group * per_head;
  const auto query_tile_of = [&](int step) {
    return first_query + static_cast<int64_t>(step % per_head) * kTile;
  };
  const auto prefetch = [&](int step, int stage) {
    const int h = kt.kv * g.group + step / per_head;
    const int64_t i0 = query_tile_of(step), q_col = QueryColumn(g, h, kD);
    const int64_t stat0 = StatRow0(g, kt.b, h);
    attention_tc::CopyTileAsync<kD>(queries_of(stage), rows, g.stride, q_col, i0, g.seq);
    attention_tc::CopyTileAsync<kD>(queries_of(stage) + kTileElems, dout_rows, g.out_stride, q_col,
                                    i0, g.seq);
    attention_tc::CopyRowStatsAsync(stats_of(stage), lse + stat0, i0, g.seq);
    attention_tc::CopyRowStatsAsync(stats_of(stage) + kTile, delta + stat0, i0, g.seq);
  };

  // The keys, the values and the first query step as one group.
  attention_tc::CopyTileAsync<kD>(ks, rows, g.stride, kt.k_col, kt.j0, g.seq);
  attention_tc::CopyTileAsync<kD>(vs, rows, g.stride, kt.v_col, kt.j0, g.seq);
  if (steps > 0) prefetch(0, 0);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  const int r0 = warp * kWarpRows;
  uint32_t ka[kChunksD][4], va[kChunksD][4];
#pragma unroll
  for (int c = 0; c < kChunksD; ++c) {
    mma::LoadA(ka[c], ks, kLd, r0, 16 * c);
    mma::LoadA(va[c], vs, kLd, r0, 16 * c);
  }
  const int64_t key[2] = {kt.j0 + r0 + lg, kt.j0 + r0 + lg + 8};
  float dk[kTilesD][4], dv[kTilesD][4];
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) {
    dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
    dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
  }
  __syncthreads();  // every warp holds its fragments: tiles 0 and 1 are stage 1 from here

  for (int step = 0; step < steps; ++step) {
    const int64_t i0 = query_tile_of(step);
    const T* qs = queries_of(step % 2);
    const T* dos = qs + kTileElems;
    const float* lse_s = stats_of(step % 2);  // natural log units
    const float* delta_s = lse_s + kTile;
    attention_tc::AdvanceStages(step, steps, [&](int next) { prefetch(next, next % 2); });
    // Note [Masking only the edge tiles] (attention_mma.cu): P and dS unmasked, zeroed where
    // invisible on the tiles that have such pairs.
    const bool edge = !attention_tc::TileVisible(i0, kt.j0, g.seq, g.causal);  // block-uniform
    uint32_t pa[kTilesQuery / 2][4], dsa[kTilesQuery / 2][4];  // P^T, dS^T: 16 queries each
#pragma unroll
    for (int pair = 0; pair < kTilesQuery / 2; ++pair) {
      float p[2][4], ds[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * pair + half;  // queries [8 j, 8 j + 8) of the tile
        float st[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dpt[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma::ProductWithRows<T>(st, ka, qs, kLd, 8 * j);    // K Q^T
        mma::ProductWithRows<T>(dpt, va, dos, kLd, 8 * j);  // V dout^T
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 8 * j + 2 * lt + (e % 2);  // the query within the tile
          p[half][e] = mma::FastExp2(fmaf(st[e], scale2, -lse_s[col] * kLog2e));
          ds[half][e] = g.scale * p[half][e] * (dpt[e] - delta_s[col]);
        }
        if (edge) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t query = i0 + 8 * j + 2 * lt + (e % 2);
            if (!attention_tc::Visible(query, key[e / 2], g.seq, g.causal)) {
              p[half][e] = ds[half][e] = 0.0f;
            }
          }
        }
      }
      mma::AccumulatorsToA<T>(pa[pair], p[0], p[1]);
      mma::AccumulatorsToA<T>(dsa[pair], ds[0], ds[1]);
    }
    mma::AccumulateProduct<T>(dv, pa, dos, kLd);  // dv (16 x D) += P^T dout
    mma::AccumulateProduct<T>(dk, dsa, qs, kLd);  // dk (16 x D) += dS^T q
    __syncthreads();  // every warp is done with this stage before the next prefetch overwrites it
  }
  T* dst = dqkv + (static_cast<int64_t>(kt.b) * g.seq + kt.j0 + r0) * g.stride;
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) {
    mma::StoreAccumulator(dst + kt.k_col + 8 * n, g.stride, dk[n], 1.0f, 1.0f, key[0] < g.seq,
                          key[1] < g.seq);
    mma::StoreAccumulator(dst + kt.v_col + 8 * n, g.stride, dv[n], 1.0f, 1.0f, key[0] < g.seq,
                          key[1] < g.seq);
  }
}

}  // namespace

bool AttentionBackwardMmaTakes(const AttentionLaunch& a) { return a.head_dim == 64; }

void LaunchAttentionBackwardMma(const AttentionLaunch& a, const float* delta, StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  if (!AttentionBackwardMmaTakes(a)) {
    std::fprintf(stderr, "LaunchAttentionBackwardMma: head_dim %d (the mma backward takes 64)\n",
                 a.head_dim);
    std::abort();
  }
  const Geometry g = MakeGeometry(a);
  const FlatTileGrid q_grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_head);
  const FlatTileGrid kv_grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_kv_head);
  constexpr int kD = 64;
  const auto launch = [&](auto t) {
    using T = decltype(t);
    const T* qkv = static_cast<const T*>(a.qkv);
    const T* dout = static_cast<const T*>(a.dout);
    T* dqkv = static_cast<T*>(a.dqkv);
    constexpr size_t kTiles = size_t{4} * kTile * Ld16(kD) * sizeof(T);
    Geometry gq = g;
    gq.tiles = static_cast<int>(q_grid.tiles);
    attention_tc::AllowSharedBytes(attention_mma_dq_kernel<T, kD>, kTiles);
    Launch(attention_mma_dq_kernel<T, kD>, q_grid.blocks, kThreads, kTiles, AsStream(stream), qkv,
           dout, a.lse, delta, dqkv, gq);
    KILN_CUDA_CHECK_LAUNCH();
    Geometry gkv = g;
    gkv.tiles = static_cast<int>(kv_grid.tiles);
    constexpr size_t kDkdvBytes = kTiles + 4 * kTile * sizeof(float);  // + two stages of stats
    attention_tc::AllowSharedBytes(attention_mma_dkdv_kernel<T, kD>, kDkdvBytes);
    Launch(attention_mma_dkdv_kernel<T, kD>, kv_grid.blocks, kThreads, kDkdvBytes, AsStream(stream),
           qkv, dout, a.lse, delta, dqkv, gkv);
    KILN_CUDA_CHECK_LAUNCH();
  };
  if (a.type == FloatType::kBF16) {
    launch(__nv_bfloat16{});
  } else {
    launch(__half{});
  }
}

}  // namespace kiln::kernels::cuda
