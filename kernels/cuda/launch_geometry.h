// Launch geometry that the .cu files compute on the host and the host tests check without a GPU:
// grids that respect CUDA's limits (gridDim.y and .z at most 65535, gridDim.x at most 2^31 - 1)
// for every shape the planner can bind. Plain C++: included by .cu files and host tests alike.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace kiln::kernels::cuda {

constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxGridYZ = 65535;

// Note [Flat tile grids]
// A kernel over (head, row tile) pairs — attention's (batch x heads) by query or key tiles — puts
// both into gridDim.x, block = head * tiles + tile, rather than heads into gridDim.y: batch x heads
// passes 65535 at training sizes (e.g. 4096 sequences of 32 heads), 2^31 - 1 blocks never does.
// The linear block order is the same as with (tiles, heads) in (x, y).
struct FlatTileGrid {
  int64_t tiles = 0;    // row tiles per head: ceil(rows / rows_per_block)
  unsigned blocks = 0;  // heads * tiles (0: nothing to launch)
};

inline FlatTileGrid MakeFlatTileGrid(int64_t rows, int rows_per_block, int64_t heads) {
  FlatTileGrid g;
  if (rows <= 0 || heads <= 0) return g;
  g.tiles = (rows + rows_per_block - 1) / rows_per_block;
  if (g.tiles > kMaxGridX / heads) {
    std::fprintf(stderr, "CUDA grid of %lld heads x %lld tiles exceeds %lld blocks\n",
                 static_cast<long long>(heads), static_cast<long long>(g.tiles),
                 static_cast<long long>(kMaxGridX));
    std::abort();
  }
  g.blocks = static_cast<unsigned>(heads * g.tiles);
  return g;
}

// Note [cuBLASLt operand alignment]
// The alignment a cuBLASLt algorithm may assume for an operand (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*)
// is given for the operand's first element. Leading dimensions are part of the matrix layout and
// cuBLASLt accounts for them itself (every framework relies on that for odd ld such as GPT-2's
// vocabulary of 50257), but we do not rely on it doing the same for strided batch offsets: the
// hint is the largest power of two (at most 256) dividing the address and every batch stride in
// bytes (a zero stride, a shared operand, imposes nothing).
inline uint32_t OperandAlignment(uintptr_t address, std::initializer_list<int64_t> byte_strides) {
  uint32_t align = 256;
  const auto fits = [&](uint64_t v) { return v % align == 0; };
  while (align > 1 && !fits(address)) align /= 2;
  for (int64_t stride : byte_strides) {
    if (stride == 0) continue;
    while (align > 1 && !fits(static_cast<uint64_t>(stride))) align /= 2;
  }
  return align;
}

}  // namespace kiln::kernels::cuda
