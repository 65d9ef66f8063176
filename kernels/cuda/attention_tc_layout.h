// The tensor-core attention's tiling and shared-memory layouts (attention_tc.cu), computed in
// plain constexpr C++ so that the host tests can check them without a GPU: tile and warp counts,
// padded leading dimensions that satisfy wmma's pointer and ldm rules, regions that do not
// overlap, and totals within the per-block limit. See Note [Tensor-core attention tiles].
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda::attention_tc {

// Note [Tensor-core attention tiles]
// Every kernel (forward, dq, dk/dv) runs 4 warps (128 threads) on a tile of kTile = 64 rows — query
// rows for the forward and dq, key rows for dk/dv — and streams the other side in tiles of kTile
// rows too. Warp w owns rows [16 w, 16 w + 16) of the block's tile: it computes those rows of every
// score tile with wmma 16x16x16 fragments (storage-type inputs, f32 accumulation), so the softmax
// and the elementwise backward steps only ever touch the warp's own rows (__syncwarp), and the
// whole block synchronizes only around loads of shared tiles.
// Shared memory holds the tiles in the storage type (bf16 / f16) with rows padded by 8 elements
// (16 bytes) and the f32 tiles padded by 4 elements: wmma wants each fragment's pointer 256-bit
// aligned and ldm a multiple of 16 bytes; the padding keeps both (every fragment starts at a row
// that is a multiple of 16 and a column that is a multiple of 16) and spreads consecutive rows over
// different banks. Every region starts at a multiple of 128 bytes of the dynamic shared memory.
constexpr int kTile = 64;                  // rows per block tile and per streamed tile
constexpr int kWarps = 4;                  // warps per block
constexpr int kThreads = 32 * kWarps;      // threads per block
constexpr int kFrag = 16;                  // wmma fragment edge (16x16x16)
constexpr int kWarpRows = kTile / kWarps;  // rows owned by one warp (one fragment row)
constexpr int kPad16 = 8;                  // padding of 16-bit rows, in elements (16 bytes)
constexpr int kPad32 = 4;                  // padding of f32 rows, in elements (16 bytes)
constexpr size_t kRegionAlign = 128;       // bytes; every region starts at a multiple
static_assert(kWarpRows == kFrag, "one fragment row per warp");
static_assert(kTile % kFrag == 0, "tiles are whole fragments");

// Leading dimensions (elements) of a shared tile with `cols` columns.
constexpr int Ld16(int cols) { return cols + kPad16; }
constexpr int Ld32(int cols) { return cols + kPad32; }

constexpr size_t AlignUp(size_t bytes) {
  return (bytes + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
}
constexpr size_t Bytes16(int rows, int cols) { return AlignUp(size_t(rows) * Ld16(cols) * 2); }
constexpr size_t Bytes32(int rows, int cols) { return AlignUp(size_t(rows) * Ld32(cols) * 4); }
constexpr size_t Max(size_t a, size_t b) { return a > b ? a : b; }

// Forward, a block per (b, h, 64 query rows):
//   q, k, v   (64, D) storage type     s (64, 64) f32 scores     p (64, 64) storage type
//   o         (64, D) f32 accumulator   m, l (64) f32 running max and sum
struct ForwardLayout {
  size_t q, k, v, s, p, o, m, l, total;
};
constexpr ForwardLayout MakeForwardLayout(int d) {
  ForwardLayout x{};
  x.q = 0;
  x.k = x.q + Bytes16(kTile, d);
  x.v = x.k + Bytes16(kTile, d);
  x.s = x.v + Bytes16(kTile, d);
  x.p = x.s + Bytes32(kTile, kTile);
  x.o = x.p + Bytes16(kTile, kTile);
  x.m = x.o + Bytes32(kTile, d);
  x.l = x.m + AlignUp(kTile * 4);
  x.total = x.l + AlignUp(kTile * 4);
  return x;
}

// dq, a block per (b, h, 64 query rows), streaming key tiles:
//   q, dout, k, v (64, D) storage type
//   scratch: s and dp (64, 64) f32 each while streaming; dq (64, D) f32 staged for the final write
//   ds        (64, 64) storage type       lse, delta (64) f32
struct DqLayout {
  size_t q, dout, k, v, s, dp, ds, lse, delta, total;
  size_t stage;  // == s: the scratch region, reused after the loop
  size_t scratch_bytes;
};
constexpr DqLayout MakeDqLayout(int d) {
  DqLayout x{};
  x.q = 0;
  x.dout = x.q + Bytes16(kTile, d);
  x.k = x.dout + Bytes16(kTile, d);
  x.v = x.k + Bytes16(kTile, d);
  x.s = x.v + Bytes16(kTile, d);
  x.dp = x.s + Bytes32(kTile, kTile);
  x.stage = x.s;
  x.scratch_bytes = Max(2 * Bytes32(kTile, kTile), Bytes32(kTile, d));
  x.ds = x.s + x.scratch_bytes;
  x.lse = x.ds + Bytes16(kTile, kTile);
  x.delta = x.lse + AlignUp(kTile * 4);
  x.total = x.delta + AlignUp(kTile * 4);
  return x;
}

// dk / dv, a block per (b, kv head, 64 key rows), streaming the query tiles of every query head of
// the group:
//   k, v, q, dout (64, D) storage type
//   scratch: s^T and dp^T (64 keys, 64 queries) f32 while streaming; dk or dv (64, D) f32 staged
//   p^T, ds^T (64, 64) storage type        lse, delta (64) f32 of the current query tile
struct DkdvLayout {
  size_t k, v, q, dout, st, dpt, pt, dst, lse, delta, total;
  size_t stage;  // == st
  size_t scratch_bytes;
};
constexpr DkdvLayout MakeDkdvLayout(int d) {
  DkdvLayout x{};
  x.k = 0;
  x.v = x.k + Bytes16(kTile, d);
  x.q = x.v + Bytes16(kTile, d);
  x.dout = x.q + Bytes16(kTile, d);
  x.st = x.dout + Bytes16(kTile, d);
  x.dpt = x.st + Bytes32(kTile, kTile);
  x.stage = x.st;
  x.scratch_bytes = Max(2 * Bytes32(kTile, kTile), Bytes32(kTile, d));
  x.pt = x.st + x.scratch_bytes;
  x.dst = x.pt + Bytes16(kTile, kTile);
  x.lse = x.dst + Bytes16(kTile, kTile);
  x.delta = x.lse + AlignUp(kTile * 4);
  x.total = x.delta + AlignUp(kTile * 4);
  return x;
}

// The loop bounds and the mask, shared by the kernels (constexpr host functions are callable from
// device code under nvcc's --expt-relaxed-constexpr) and checked on the host: every visible
// (query, key) pair is visited by exactly one (block, streamed tile) step of each kernel.
// Whether query i sees key j: a real key, and at or before the query when causal.
constexpr bool Visible(int64_t i, int64_t j, int64_t seq, bool causal) {
  return i < seq && j < seq && (!causal || j <= i);
}
// Whether every pair of the query tile at q0 and the key tile at k0 is visible (whole tiles below
// seq, and wholly on or below the diagonal when causal): such tiles need no per-element mask (Note
// [Masking only the edge tiles] in attention_mma.cu).
constexpr bool TileVisible(int64_t q0, int64_t k0, int64_t seq, bool causal) {
  return q0 + kTile <= seq && k0 + kTile <= seq && (!causal || k0 + kTile - 1 <= q0);
}
// The forward and dq of the query tile starting at q0 stream key tiles from 0 while k0 < KeyEnd:
// with causal masking, tiles wholly above the diagonal are skipped.
constexpr int64_t KeyEnd(int64_t q0, int64_t seq, bool causal) {
  return causal ? (q0 + kTile < seq ? q0 + kTile : seq) : seq;
}
// dk/dv of the key tile starting at j0 stream query tiles from FirstQuery while i0 < seq: with
// causal masking, queries before the key tile's own query tile see none of its keys.
constexpr int64_t FirstQuery(int64_t j0, bool causal) { return causal ? j0 / kTile * kTile : 0; }

// The largest dynamic shared memory any of the three kernels asks for at head dim d.
constexpr size_t MaxSharedBytes(int d) {
  return Max(MakeForwardLayout(d).total, Max(MakeDqLayout(d).total, MakeDkdvLayout(d).total));
}

// Shared memory a block may opt into on the GPUs we build for: 163 KiB on sm_80 (A100), 227 KiB on
// sm_90 (H100 / H200). The layouts stay within the smaller; attention_tc.cu still asks the device.
constexpr size_t kSm80MaxSharedBytes = 163 * 1024;

// Head dims with a tensor-core instantiation.
constexpr bool SupportedHeadDim(int d) { return d == 64 || d == 128; }

// Whether the tensor-core kernels can take a launch, as far as the host can tell without asking
// the device: 16-bit storage, a supported head dim, and 16-byte aligned tensors (the tile loads
// move 16 bytes at a time; rows are D-element multiples, so every row is aligned when the base
// is). Null pointers (the forward has no dout / dqkv) impose nothing.
inline bool PointerAligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline bool LaunchFits(const AttentionLaunch& a) {
  return a.type != FloatType::kF32 && SupportedHeadDim(a.head_dim) && a.n_kv_head > 0 &&
         a.n_head % a.n_kv_head == 0 && PointerAligned16(a.qkv) && PointerAligned16(a.out) &&
         PointerAligned16(a.dout) && PointerAligned16(a.dqkv);
}

}  // namespace kiln::kernels::cuda::attention_tc
