// Attributes of `matmul`: out = op(a) @ op(b), op = transpose of the last two axes when set.
// a: (..., M, K) — or (..., K, M) with trans_a; b: (K, N) — or (N, K) with trans_b — shared by every
// batch, or (..., K, N) with the same leading axes as a. out: (..., M, N), dtype of a.
// Backends compute in f32 (f32 accumulation for bf16/f16 inputs).
#pragma once

namespace kiln::ops {

struct MatmulAttrs {
  bool trans_a = false;
  bool trans_b = false;
};

}  // namespace kiln::ops
