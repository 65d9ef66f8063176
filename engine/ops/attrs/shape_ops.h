// Attributes of the shape ops.
//   reshape(x): a view with `shape` (one entry may be -1); no kernel runs.
#pragma once

#include "engine/core/shape.h"

namespace kiln::ops {

struct ReshapeAttrs {
  Shape shape;
};

}  // namespace kiln::ops
