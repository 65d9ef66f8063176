// The fused AdamW's segment table (optim.cu), built on the host from an optimizer shard's segments
// (engine/train/optimizer_shard.cc): which elements of the flat buffers are updated, with or
// without weight decay. Plain C++ so that the host tests check it without a GPU.
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
  std::vector<AdamSegment> segments;  // those with a gradient and elements, in order
  int64_t max_length = 0;
};

// Note [Device AdamW state layout]
// The moments are laid out as optim's AdamW lays them out: (span) f32 over the shard's range,
// element i of the range at index i, so one offset indexes master, grads, params and moments
// alike, and elements no segment updates (alignment padding between parameters, parameters
// without a gradient) stay zero. Checkpoints store the moments as flat arrays of the range
// (Note [Sharded checkpoints]), so the device state is interchangeable with the CPU's. Fails when
// a segment lies outside [0, span) or there are more segments than one launch's gridDim.y holds.
absl::StatusOr<AdamTable> MakeAdamTable(const std::vector<DeviceSegment>& segments, int64_t span);

}  // namespace kiln::kernels::cuda
