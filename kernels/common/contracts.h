// Contract checks every backend's kernel registrations share (kernels/cpu/register_*.cc,
// kernels/cuda/register_*.cc): a node's bound tensors are checked against its op's contract the
// same way on every device, and the sizes a kernel launch needs are read from them here, once.
// A failed check aborts with a message naming the op and the tensor: the planner bound the wrong
// tensors, which is a bug, not user input (user input is refused earlier, by shape inference).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/kernel.h"
#include "engine/core/tensor.h"
#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/matmul.h"

namespace kiln::kernels {

// Length of the last axis (1 for a 0-d tensor).
inline int64_t LastDim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }
// numel / last axis: the rows of t viewed as a matrix.
inline int64_t Rows(const Tensor& t) {
  const int64_t c = LastDim(t);
  return c == 0 ? 0 : t.numel() / c;
}

// Aborts unless t is a contiguous tensor of `dtype` on a device of type `device`.
void CheckTensorOn(const Tensor& t, DeviceType device, DType dtype, std::string_view what);
void CheckSameShape(const Tensor& a, const Tensor& b, std::string_view what);
// Checks that t is (B, T, width): packed q, k, v heads.
void CheckPacked(const Tensor& t, int64_t width, std::string_view what);

// gelu / silu (x) -> y like x.
void CheckActivation(const KernelContext& ctx, DeviceType device);
// scale(x) -> y like x; scale_by(x, s [1] f32) -> y like x; cast(x) -> y in the attribute's dtype:
// y has x's elements.
enum class ScaleOp { kScale, kScaleBy, kCast };
void CheckScale(const KernelContext& ctx, DeviceType device, ScaleOp op);

// add / mul: out like a; add's b a suffix of a's shape (any float dtype), mul's b equal to a.
void CheckBinary(const KernelContext& ctx, DeviceType device, bool is_add);

// matmul(a, b) -> out and its fused forms (engine/ops/attrs/matmul.h): a (..., M, K) or
// (..., K, M) with trans_a; b (K, N) or (N, K) with trans_b, shared by every batch, or batched with
// exactly a's leading dims; out (..., M, N); bias (N) (kBias, kBiasGelu); pre (..., M, N)
// (kBiasGelu: output 0, y output 1; kDGelu, kDGeluBGrad: input 2); dbias (N) (kDGeluBGrad,
// kBGrad: output 1; kBGrad takes no third input and a 2-D b without trans_b); all in a's dtype.
struct MatmulShape {
  int64_t batch = 0;  // product of a's leading dims (1 for a 2-D a)
  int64_t m = 0, k = 0, n = 0;
  bool b_batched = false;  // b has a's leading dims (else one (K, N) b for every batch)
  ops::MatmulEpilogue epilogue = ops::MatmulEpilogue::kNone;
  bool has_bias() const {
    return epilogue == ops::MatmulEpilogue::kBias || epilogue == ops::MatmulEpilogue::kBiasGelu;
  }
  bool dgelu() const {
    return epilogue == ops::MatmulEpilogue::kDGelu || epilogue == ops::MatmulEpilogue::kDGeluBGrad;
  }
  bool bias_grad() const {
    return epilogue == ops::MatmulEpilogue::kDGeluBGrad || epilogue == ops::MatmulEpilogue::kBGrad;
  }
};
MatmulShape CheckMatmul(const KernelContext& ctx, DeviceType device,
                        ops::MatmulEpilogue epilogue = ops::MatmulEpilogue::kNone);

// layer_norm(x, gamma, beta) -> (y, mean, rstd), rms_norm(x, gamma) -> (y, rstd): the f32 (C)
// parameters and (rows) statistics against x, and y like x.
void CheckNorm(const KernelContext& ctx, DeviceType device, bool rms);
// layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta);
// rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma); the _add forms take a last input, the
// residual gradient, shaped and typed like dy.
void CheckNormBackward(const KernelContext& ctx, DeviceType device, bool rms);

// cross_entropy(logits (..., V), targets (...) i32) -> (loss [1] f32, dlogits like logits);
// cross_entropy_scaled takes a third input, scale [1] f32, that multiplies dlogits.
struct CrossEntropyShape {
  int64_t rows = 0, vocab = 0;
  bool scaled = false;  // cross_entropy_scaled
};
CrossEntropyShape CheckCrossEntropy(const KernelContext& ctx, DeviceType device);

// embedding(table (V, C), ids (...) i32) -> out (..., C); embedding_backward(dy (..., C), ids)
// -> dtable (V, C) f32.
struct EmbeddingShape {
  int64_t n = 0, vocab = 0, cols = 0;  // ids, table rows, row length
};
EmbeddingShape CheckEmbedding(const KernelContext& ctx, DeviceType device);
EmbeddingShape CheckEmbeddingBackward(const KernelContext& ctx, DeviceType device);

// sum_to(dy) -> out of attrs.shape, a suffix of dy's shape, in dy's dtype.
void CheckSumTo(const KernelContext& ctx, DeviceType device);

// rope's attributes (an even head_dim, n_head a multiple of n_kv_head) and its qkv's layout.
absl::Status CheckRopeAttrs(const ops::RopeAttrs& attrs);
void CheckRope(const KernelContext& ctx, DeviceType device);
// Note [RoPE tables]: computed in f32 the way Hugging Face does: inv_freq[i] = 1 / theta^(2i / D),
// angle = t * inv_freq[i] rounded to f32, then cos / sin of that angle. Every backend uses these
// tables (the CUDA one uploads them), so they rotate identically.
void BuildRopeTables(const ops::RopeAttrs& attrs, int64_t seq,
                     std::vector<float>* cos,   // (T, D/2)
                     std::vector<float>* sin);  // (T, D/2)

// The attention geometry of a node (attention: qkv is input 0; backward: input 1), with its
// tensors checked: out (B, T, H D) like qkv, lse (B, H, T) f32, and for the backward dout like
// out and dqkv like qkv.
struct AttentionGeometry {
  int64_t batch = 0, seq = 0;
  int n_head = 0, n_kv_head = 0, head_dim = 0;
  bool causal = true;
  float scale = 1.0f;  // the attribute, or 1/sqrt(head_dim) when it is 0
};
AttentionGeometry CheckAttention(const KernelContext& ctx, DeviceType device, bool backward);

}  // namespace kiln::kernels
