// Attributes of `matmul`: out = op(a) @ op(b), op = transpose of the last two axes when set.
// a: (..., M, K) — or (..., K, M) with trans_a; b: (K, N) — or (N, K) with trans_b — shared by
// every batch, or (..., K, N) with the same leading axes as a. out: (..., M, N), dtype of a.
// Backends compute in f32 (f32 accumulation for bf16/f16 inputs).
//
// The fused forms, made only by the fusion passes (engine/graph/passes.h) after autodiff, take the
// same attributes and differ in what the matmul does to its product P = op(a) @ op(b) on the way
// out (MatmulEpilogue):
//   matmul_bias(a, b, bias (N))           -> out = P + bias
//   matmul_bias_gelu(a, b, bias (N))      -> (pre = P + bias, y = gelu(pre)), both (..., M, N)
//   matmul_dgelu(a, b, pre (..., M, N))   -> out = gelu_backward(dy = P, pre) = P * gelu'(pre)
//   matmul_dgelu_bgrad(a, b, pre)         -> (out as matmul_dgelu, dbias (N) = out summed over
//                                             every leading axis: the bias gradient of pre)
//   matmul_bgrad(a, b (K, N))             -> (out = P, db (N) = b summed over its rows): a
//                                             weight gradient a^T dy with dy's bias gradient
// gelu is the tanh form (GPT-2's); bias and pre have out's dtype.
#pragma once

#include <cstdint>

namespace kiln::ops {

struct MatmulAttrs {
  bool trans_a = false;
  bool trans_b = false;
};

enum class MatmulEpilogue : uint8_t { kNone, kBias, kBiasGelu, kDGelu, kDGeluBGrad, kBGrad };

}  // namespace kiln::ops
