// The fused AdamW's chunk table (optim.cu), built on the host from an optimizer shard's segments
// (engine/train/optimizer_shard.cc): which elements of the flat buffers are updated, with or
// without weight decay, cut into one block's worth each. Plain C++ so that the host tests check it
// without a GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda {

struct DeviceSegment {
  int64_t offset = 0;  // into master / grads / params / moments (elements)
  int64_t length = 0;
  bool weight_decay = true;
  bool has_grad = true;  // false: skipped, as torch skips parameters without a gradient
};

struct AdamTable {
  std::vector<AdamChunk> chunks;  // one per block, in segment order
  int64_t num_elements = 0;       // elements updated: the sum of the chunks' lengths
};

// Note [Device AdamW state layout]
// The moments are laid out as optim's AdamW lays them out: (span) f32 over the shard's range,
// element i of the range at index i, so one offset indexes master, grads, params and moments
// alike, and elements no segment updates (alignment padding between parameters, parameters
// without a gradient) stay zero. Checkpoints store the moments as flat arrays of the range
// (Note [Sharded checkpoints]), so the device state is interchangeable with the CPU's.
//
// Note [AdamW chunks]
// One launch updates every segment. Sizing a grid to the largest segment for each segment (a 2-D
// grid, segment = blockIdx.y) leaves most blocks empty — GPT-2 124M has a 38M-element embedding
// beside 768-element biases, so every segment got 1024 blocks, ~150k in all, most with nothing
// to update — and caps segments at gridDim.y's 65535. Instead the host cuts each segment with a
// gradient into chunks of at most `chunk_elements` (the last one of a segment shorter) and block b
// updates chunk b: no empty blocks, no limit on segments (chunks are bounded by gridDim.x,
// 2^31 - 1), and each element is still updated by exactly one thread with the same arithmetic.
// Padding between segments and segments without a gradient belong to no chunk. Fails when a
// segment lies outside [0, span) or the chunks exceed gridDim.x.
absl::StatusOr<AdamTable> MakeAdamTable(const std::vector<DeviceSegment>& segments, int64_t span,
                                        int64_t chunk_elements = kAdamChunkElements);

}  // namespace kiln::kernels::cuda
