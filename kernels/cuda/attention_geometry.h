// The geometry every CUDA attention kernel receives by value (the simple kernels of attention.cu
// and the tensor-core kernels of attention_tc.cu alike): sequence length, heads, the packed qkv
// and out row strides, causality, scale and the row tiles per head of a flat tile grid. Plain C++,
// built from an AttentionLaunch on the host; with the decoding of a block's (batch, head, tile)
// and the columns of its head in the packed tensors that every kernel starts with.
#pragma once

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda {

struct Geometry {
  int64_t seq;
  int n_head, n_kv, head_dim, group;  // group: query heads per kv head (kv head = h / group)
  int64_t stride;                     // qkv row length (H + 2 Hkv) D
  int64_t out_stride;                 // H D
  bool causal;
  float scale;
  int tiles = 1;  // row tiles per head of the launch's flat grid (Note [Flat tile grids])
};

inline Geometry MakeGeometry(const AttentionLaunch& a) {
  Geometry g;
  g.seq = a.seq;
  g.n_head = a.n_head;
  g.n_kv = a.n_kv_head;
  g.head_dim = a.head_dim;
  g.group = a.n_head / a.n_kv_head;
  g.stride = static_cast<int64_t>(a.n_head + 2 * a.n_kv_head) * a.head_dim;
  g.out_stride = static_cast<int64_t>(a.n_head) * a.head_dim;
  g.causal = a.causal;
  g.scale = a.scale;
  return g;
}

// Where a block of a flat tile grid (Note [Flat tile grids]) works, for the kernels that take one
// tile of a head's query rows (the forwards, dq): block = (b H + h) tiles + tile. k_col and v_col
// are the columns of the kv head's keys and values in a packed qkv row, q_col that of head h's
// queries, stat0 (b, h)'s first row of the (B, H, T) row statistics (lse, delta). constexpr so
// that device code can call it (--expt-relaxed-constexpr).
struct QueryTile {
  int b, h, kv;
  int64_t q0;  // first query row of the tile
  int64_t q_col, k_col, v_col, stat0;
};

// The same for the kernels that take one tile of a kv head's key rows (dk / dv) and loop over the
// query heads that share it: block = (b Hkv + kv) tiles + tile.
struct KeyTile {
  int b, kv;
  int64_t j0;  // first key row of the tile
  int64_t k_col, v_col;
};

// head_dim is g.head_dim, passed apart so that the tensor-core kernels can pass their
// compile-time kD: columns that fold into addresses need no registers of their own.
constexpr int64_t QueryColumn(const Geometry&, int h, int64_t head_dim) {
  return static_cast<int64_t>(h) * head_dim;
}
constexpr int64_t KeyColumn(const Geometry& g, int kv, int64_t head_dim) {
  return static_cast<int64_t>(g.n_head + kv) * head_dim;
}
constexpr int64_t ValueColumn(const Geometry& g, int kv, int64_t head_dim) {
  return static_cast<int64_t>(g.n_head + g.n_kv + kv) * head_dim;
}
// (b, h)'s first row of a (B, H, T) statistic.
constexpr int64_t StatRow0(const Geometry& g, int b, int h) {
  return (static_cast<int64_t>(b) * g.n_head + h) * g.seq;
}
// Batch b's first row of a (B, T, stride) tensor.
template <typename T>
constexpr T* BatchRows(T* base, const Geometry& g, int b, int64_t stride) {
  return base + static_cast<int64_t>(b) * g.seq * stride;
}

// tile_rows: the rows of a tile (the kernel's tile size); head_dim: as above.
constexpr QueryTile QueryTileOf(const Geometry& g, int64_t block, int64_t tile_rows,
                                int64_t head_dim) {
  QueryTile t{};
  const int bh = static_cast<int>(block / g.tiles);
  t.b = bh / g.n_head;
  t.h = bh % g.n_head;
  t.kv = t.h / g.group;
  t.q0 = block % g.tiles * tile_rows;
  t.q_col = QueryColumn(g, t.h, head_dim);
  t.k_col = KeyColumn(g, t.kv, head_dim);
  t.v_col = ValueColumn(g, t.kv, head_dim);
  t.stat0 = StatRow0(g, t.b, t.h);
  return t;
}

constexpr KeyTile KeyTileOf(const Geometry& g, int64_t block, int64_t tile_rows, int64_t head_dim) {
  KeyTile t{};
  const int bg = static_cast<int>(block / g.tiles);
  t.b = bg / g.n_kv;
  t.kv = bg % g.n_kv;
  t.j0 = block % g.tiles * tile_rows;
  t.k_col = KeyColumn(g, t.kv, head_dim);
  t.v_col = ValueColumn(g, t.kv, head_dim);
  return t;
}

}  // namespace kiln::kernels::cuda
