// The geometry every CUDA attention kernel receives by value (the simple kernels of attention.cu
// and the tensor-core kernels of attention_tc.cu alike): sequence length, heads, the packed qkv
// and out row strides, causality, scale and the row tiles per head of a flat tile grid. Plain C++,
// built from an AttentionLaunch on the host.
#pragma once

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda {

struct Geometry {
  int64_t seq;
  int n_head, n_kv, head_dim, group;  // group: query heads per kv head (kv head = h / group)
  int64_t stride;      // qkv row length (H + 2 Hkv) D
  int64_t out_stride;  // H D
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

}  // namespace kiln::kernels::cuda
