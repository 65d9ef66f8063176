// Tensor shapes and strides: small inline vectors of int64 plus the helpers everyone needs.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/inlined_vector.h"

namespace kiln {

using Shape = absl::InlinedVector<int64_t, 6>;

int64_t NumElements(const Shape& shape);
Shape ContiguousStrides(const Shape& shape);
std::string ShapeToString(const Shape& shape);  // "[2, 3, 4]"
// Resolves a negative axis (-1 = last) against `rank`; returns -1 when out of range.
int NormalizeAxis(int axis, int rank);

}  // namespace kiln
