// The tensor-core attention forward with its state in registers (FlashAttention-2's scheme) on
// mma.sync m16n8k16 (kernels/cuda/mma.cuh): bf16 / f16 storage, head_dim 64 or 128, packed qkv with
// grouped-query heads; out and lse as the other attention kernels give them. The default forward
// wherever the tensor-core kernels apply (Note [Choosing the attention kernels] in attention.cu);
// the backward stays attention_tc.cu's. See Note [Register-resident attention forward].
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

// Note [Register-resident attention forward]
// The math is Note [Tensor-core attention]'s; the difference is where the state lives. A block
// takes 64 query rows of one (b, h) and 4 warps, warp w rows [16 w, 16 w + 16); it streams key /
// value tiles of 64 rows through shared memory (tiles wholly above the diagonal skipped when
// causal). Per tile a warp computes its 16 x 64 scores as 8 accumulator tiles of 16 x 8
// (mma.sync, Q's fragments loaded into registers once), so with Note [mma.sync fragments] each
// lane holds two rows' worth (rows g and g + 8, 16 columns each): the row max and sum need two
// shuffles among the 4 lanes of a row, the probabilities are rounded to the storage type straight
// into the A fragments of P V, and the output accumulator O (16 x D, f32) is rescaled and
// accumulated in registers. No score, probability or partial output touches shared memory, unlike
// the wmma forward (attention_tc.cu), whose fragments are opaque.
// Scores are kept in log2 units (scale * log2(e) folded into one multiply, exp2 on the GPU's fast
// path); lse is converted back: lse = ln(2) m2 + ln(l). Masked scores are -inf and give p = 0
// explicitly; the running max is taken as 0 while it is still -inf (as the other kernels do). l is
// summed per lane over its columns and reduced across the row's 4 lanes once, at the end.
//
// Note [Prefetched key and value tiles]
// Key and value tiles go through two stages of shared memory: while the warps compute with tile i,
// tile i + 1 is already on its way (cp.async, which copies global to shared memory without
// passing through registers or holding up the issuing warp), so the load latency that the
// previous version exposed at every tile — load, barrier, compute — is hidden behind the tile's
// math. Each thread waits for its own copies of tile i (__pipeline_wait_prior) and a barrier then
// publishes everyone's; a second barrier after the tile's math frees its stage for the prefetch
// of tile i + 2. Emulated with copies that land only at the wait (Note [Emulated asynchronous
// copies]), so a missing wait shows up in the tests. The mma backward kernels
// (attention_mma_backward.cu) stream the same way — dq its key / value tiles, dk / dv its query /
// dout tiles with their lse and delta — with the second stage in the two tiles whose rows the
// warps already hold as fragments, so it costs them no extra shared memory.
//
// Note [Masking only the edge tiles]
// On an H200 the register-resident kernels spent more issue slots on the element-wise work around
// the products than on the products: per score, the causal and sequence-end tests in 64-bit
// integers, the exp2f range fix-ups, the selects. Only the tiles that cross the diagonal or the
// sequence end have invisible pairs (attention_tc::TileVisible; one in 16 key tiles of a causal
// T = 1024 row, plus the last): the kernels mask those in a separate, block-uniform pass — the
// forward sets masked scores to -inf before the row max, the backward zeroes P and dS after
// computing them unmasked — and every other tile runs the formula alone, with one MUFU.EX2 per
// probability (mma::FastExp2).
//
// Shared memory: q and two stages of k and v tiles (64, D + 8) in the storage type; the 8-element
// padding makes the 32-bit fragment loads conflict-free (a row is 4 (D + 8) / 4 = D / 2 + 4 words:
// rows g = 0..7 of a fragment start 4 banks apart, and the 4 lanes of a row read consecutive
// words).
using attention_tc::kLn2;
using attention_tc::kLog2e;

// Note [Forward register budget]: at head_dim 64, ptxas left to itself aims at 128 registers (four
// blocks an SM) and, with the ldmatrix loads' four live registers (Note [ldmatrix for the B
// fragments]), spilled 32 bytes a thread; a minimum of one block lets it take what it needs (~200
// registers on sm_90: two blocks, eight warps an SM, as FlashAttention-2 runs), without local
// memory.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_mma_forward_kernel(const T* qkv, T* out, float* lse, Geometry g) {
  constexpr int kChunksD = kD / 16;  // k-chunks of Q K^T
  constexpr int kTilesD = kD / 8;    // n-tiles of the output
  constexpr int kTilesKey = kTile / 8;
  constexpr int kLd = Ld16(kD);
  KILN_DYNAMIC_SHARED_BYTES(smem);
  // (64, D + 8) queries, then two stages of (64, D + 8) keys and values: stage s's keys at
  // qs + (1 + 2 s) 64 (D + 8), its values one tile further (offsets, not a pointer array, which
  // the dynamic stage index would put in local memory).
  T* qs = reinterpret_cast<T*>(smem);
  constexpr int kTileElems = kTile * kLd;
  const auto keys_of = [&](int stage) { return qs + (1 + 2 * stage) * kTileElems; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int lg = lane / 4, lt = lane % 4;  // Note [mma.sync fragments]: g and t
  const QueryTile qt = QueryTileOf(g, blockIdx.x, kTile, kD);
  const T* rows = BatchRows(qkv, g, qt.b, g.stride);  // (T, stride)
  const float scale2 = g.scale * kLog2e;

  // Note [Prefetched key and value tiles]: Q and the first key / value tile as one group.
  const int64_t keys = attention_tc::KeyEnd(qt.q0, g.seq, g.causal);
  const int tiles = static_cast<int>((keys + kTile - 1) / kTile);
  attention_tc::CopyTileAsync<kD>(qs, rows, g.stride, qt.q_col, qt.q0, g.seq);
  if (tiles > 0) {
    attention_tc::CopyKeyValueTilesAsync<kD>(keys_of(0), rows, g.stride, qt.k_col, qt.v_col, 0,
                                             g.seq);
  }
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  uint32_t qa[kChunksD][4];  // the warp's 16 query rows as A fragments
#pragma unroll
  for (int c = 0; c < kChunksD; ++c) mma::LoadA(qa[c], qs, kLd, warp * kWarpRows, 16 * c);
  float o[kTilesD][4];
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8, log2 units
  const int64_t row[2] = {qt.q0 + warp * kWarpRows + lg, qt.q0 + warp * kWarpRows + lg + 8};

  for (int tile = 0; tile < tiles; ++tile) {
    const int64_t k0 = static_cast<int64_t>(tile) * kTile;
    const T* kt = keys_of(tile % 2);
    const T* vt = kt + kTileElems;
    attention_tc::AdvanceStages(tile, tiles, [&](int next) {
      attention_tc::CopyKeyValueTilesAsync<kD>(keys_of(next % 2), rows, g.stride, qt.k_col,
                                               qt.v_col, k0 + kTile, g.seq);
    });
    // s (16 x 64) = Q K^T: n-tile j holds keys [8 j, 8 j + 8).
    float s[kTilesKey][4];
#pragma unroll
    for (int j = 0; j < kTilesKey; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      mma::ProductWithRows<T>(s[j], qa, kt, kLd, 8 * j);
    }
    // Scale, mask (edge tiles only: Note [Masking only the edge tiles]), then the online softmax
    // per row (i = 0: row g, i = 1: row g + 8).
    const bool edge = !attention_tc::TileVisible(qt.q0, k0, g.seq, g.causal);  // block-uniform
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kTilesKey; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = k0 + 8 * j + 2 * lt + (e % 2);
        const bool hidden = edge && !attention_tc::Visible(row[e / 2], key, g.seq, g.causal);
        s[j][e] = hidden ? -INFINITY : s[j][e] * scale2;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
    }
    float alpha[2], ref[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(mma::kFullMask, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(mma::kFullMask, tile_max[i], 2));
      const float m_new = fmaxf(m[i], tile_max[i]);
      ref[i] = m_new == -INFINITY ? 0.0f : m_new;  // no inf - inf while all masked
      alpha[i] = mma::FastExp2(m[i] - ref[i]);     // 0 on the first visible tile
      m[i] = m_new;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int n = 0; n < kTilesD; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // p = 2^(s - m), rounded to T as the A fragments of P V: key chunk c (16 keys) is n-tiles
    // 2c and 2c + 1 of s.
    uint32_t pa[kTilesKey / 2][4];
#pragma unroll
    for (int c = 0; c < kTilesKey / 2; ++c) {
      float p[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          p[half][e] = mma::FastExp2(s[2 * c + half][e] - ref[e / 2]);  // masked: 2^-inf = 0
          l[e / 2] += p[half][e];
        }
      }
      mma::AccumulatorsToA<T>(pa[c], p[0], p[1]);
    }
    mma::AccumulateProduct<T>(o, pa, vt, kLd);  // o (16 x D) += P V
    __syncthreads();  // every warp is done with this stage before the next prefetch overwrites it
  }
  // out = O / l, lse = ln(2) m + ln(l), for the rows below seq.
  T* out_rows = BatchRows(out, g, qt.b, g.out_stride);  // (T, H D)
  float* lse_row = lse + qt.stat0;
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(mma::kFullMask, l[i], 1);
    l[i] += __shfl_xor_sync(mma::kFullMask, l[i], 2);
    inv[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    if (lt == 0 && row[i] < g.seq) {
      lse_row[row[i]] = l[i] > 0.0f ? kLn2 * m[i] + logf(l[i]) : -INFINITY;
    }
  }
  T* dst = out_rows + (qt.q0 + warp * kWarpRows) * g.out_stride + qt.q_col;
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) {
    mma::StoreAccumulator(dst + 8 * n, g.out_stride, o[n], inv[0], inv[1], row[0] < g.seq,
                          row[1] < g.seq);
  }
}

}  // namespace

void LaunchAttentionForwardMma(const AttentionLaunch& a, StreamPtr stream) {
  if (a.batch == 0 || a.seq == 0) return;
  const FlatTileGrid grid = MakeFlatTileGrid(a.seq, kTile, a.batch * a.n_head);
  Geometry g = MakeGeometry(a);
  g.tiles = static_cast<int>(grid.tiles);
  attention_tc::DispatchTensorCore(a, [&](auto t, auto dim) {
    using T = decltype(t);
    constexpr int kD = decltype(dim)::value;
    constexpr size_t kBytes = size_t{5} * kTile * Ld16(kD) * sizeof(T);  // q, 2 x (k, v)
    attention_tc::AllowSharedBytes(attention_mma_forward_kernel<T, kD>, kBytes);
    Launch(attention_mma_forward_kernel<T, kD>, grid.blocks, kThreads, kBytes, AsStream(stream),
           static_cast<const T*>(a.qkv), static_cast<T*>(a.out), a.lse, g);
  });
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::kernels::cuda
