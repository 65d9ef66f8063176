// Attributes of the element-wise ops. Kernels compute in f32 whatever the storage dtype.
//   add(a, b): a + b; b's shape is a suffix of a's (so bias add is add with a 1-D b).
//   mul(a, b): a * b, same shapes.
//   scale(x): alpha * x.
//   scale_by(x, s): x * s[0], s a 1-element f32 tensor (a gradient seed scaling a gradient).
//   gelu(x), gelu_backward(dy, x): tanh approximation, as torch gelu(approximate="tanh").
//   silu(x), silu_backward(dy, x): x * sigmoid(x).
//   swiglu(gu), swiglu_backward(dy, gu): gu is (..., 2F) = [gate | up]; out (..., F) =
//     silu(gate) * up; the backward returns d(gu) (..., 2F).
//   cast(x): to `dtype` (round to nearest even).
//   accumulate_grad(g) -> G: G (a gradient slot, any float dtype) += g (any float dtype), in f32.
//   sum_to(dy): sums the leading axes of dy away, leaving `shape` (a suffix of dy's shape); out has
//     dy's dtype; accumulation in f32.
//   sum(x) / mean(x): all elements -> f32 [1].
//   broadcast_scalar(s): s f32 [1] -> tensor of `shape`/`dtype` filled with s[0] * alpha.
#pragma once

#include "engine/core/dtype.h"
#include "engine/core/shape.h"

namespace kiln::ops {

struct ScaleAttrs {
  float alpha = 1.0f;
};

struct CastAttrs {
  DType dtype = DType::kF32;
};

struct SumToAttrs {
  Shape shape;
};

struct BroadcastScalarAttrs {
  Shape shape;
  DType dtype = DType::kF32;
  float alpha = 1.0f;
};

}  // namespace kiln::ops
