// Attributes of the shape ops.
//   reshape(x): a view with `shape` (one entry may be -1); no kernel runs.
//   flat_slice(x): a view of x's elements [offset, offset + numel(shape)) with `shape` (x
//     contiguous); no kernel runs. Used where one buffer holds several tensors (ZeRO-3 gathers).
#pragma once

#include <cstdint>

#include "engine/core/shape.h"

namespace kiln::ops {

struct ReshapeAttrs {
  Shape shape;
};

struct FlatSliceAttrs {
  int64_t offset = 0;
  Shape shape;
};

}  // namespace kiln::ops
