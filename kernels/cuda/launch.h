// The boundary between the kernel registrations (host C++, compiled by the C++ toolchain) and the
// .cu files (compiled by nvcc): plain launch functions over raw device pointers, ordered on the
// given stream. No engine types cross it, so nvcc never parses abseil or the engine headers.
// Semantics are those of the CPU reference (kernels/cpu/isa_api.h); f32 compute throughout.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::kernels::cuda {

// The floating storage types, numbered as kiln::DType (checked in cuda_context.h).
enum class FloatType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };
using StreamPtr = void*;  // a cudaStream_t

// ---- eltwise.cu ----
// y = alpha * (alpha_ptr ? *alpha_ptr : 1) * x (kScale, any pair of float types), gelu(x), silu(x).
enum class UnaryOp : uint8_t { kScale, kGelu, kSilu };
void LaunchUnary(UnaryOp op, FloatType x_type, FloatType y_type, const void* x, void* y, int64_t n,
                 float alpha, const float* alpha_ptr, StreamPtr stream);

// out = a + b (b repeats every b_n elements; b may have another float type), a * b,
// dy * gelu'(x), dy * silu'(x) (a = dy, b = x). out has a's type and may alias a.
enum class BinaryOp : uint8_t { kAdd, kMul, kGeluBackward, kSiluBackward };
void LaunchBinary(BinaryOp op, FloatType a_type, FloatType b_type, const void* a, const void* b,
                  void* out, int64_t n, int64_t b_n, StreamPtr stream);

// gu (rows, 2f) = [gate | up]: out (rows, f) = silu(gate) * up; backward: dgu from dy (rows, f).
void LaunchSwiglu(FloatType type, const void* gu, void* out, int64_t rows, int64_t f,
                  StreamPtr stream);
void LaunchSwigluBackward(FloatType type, const void* dy, const void* gu, void* dgu, int64_t rows,
                          int64_t f, StreamPtr stream);

// out (n) = value[0] * alpha, value a device f32 scalar.
void LaunchFillFromScalar(FloatType type, void* out, int64_t n, const float* value, float alpha,
                          StreamPtr stream);

// Note [Dropout stream] (kernels/cpu/register_eltwise.cc) on the device: the key comes from
// Philox(seed, step << 32 | stream_id), seed_step a device i64 [2].
void LaunchDropout(FloatType type, const void* x, void* y, int64_t n, float p,
                   const int64_t* seed_step, uint32_t stream_id, StreamPtr stream);

// out (n, row_bytes) = table rows ids[i] (bytes copied as they are); an id outside [0, vocab)
// traps (a broken contract, as in loss.cu).
void LaunchEmbedding(const void* table, const int32_t* ids, void* out, int64_t n, int64_t vocab,
                     int64_t row_bytes, StreamPtr stream);

// ---- reduce.cu (Note [Deterministic reductions on the device]) ----
size_t SumWorkspaceBytes(int64_t n);
// out[0] = scale * sum(x) in f32 (accumulated in f64).
void LaunchSum(FloatType type, const void* x, int64_t n, double scale, float* out, void* workspace,
               StreamPtr stream);
size_t SumToWorkspaceBytes(int64_t rows, int64_t cols);
// out (cols) = sum over rows of x (rows, cols); out has x's type.
void LaunchSumTo(FloatType type, const void* x, int64_t rows, int64_t cols, void* out,
                 void* workspace, StreamPtr stream);
// Squared L2 norm of a flat buffer in f64 and whether every element is finite, into result[0]
// (sum of squares) and result[1] (1.0 when all finite), both on the device.
size_t NormStatsWorkspaceBytes(int64_t n);
void LaunchNormStats(FloatType type, const void* x, int64_t n, double* result, void* workspace,
                     StreamPtr stream);

// ---- norm.cu ----
struct NormLaunch {
  bool rms = false;
  FloatType type = FloatType::kF32;
  const void* x = nullptr;         // (rows, cols)
  const float* gamma = nullptr;    // (cols)
  const float* beta = nullptr;     // (cols)
  void* y = nullptr;               // (rows, cols)
  float* mean = nullptr;           // (rows)
  float* rstd = nullptr;           // (rows)
  const void* dy = nullptr;        // backward: (rows, cols)
  void* dx = nullptr;              // backward: (rows, cols)
  float* dgamma = nullptr;         // backward: (cols)
  float* dbeta = nullptr;          // backward: (cols)
  const void* residual = nullptr;  // backward, optional: (rows, cols) added to dx
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-5f;
};
void LaunchNorm(const NormLaunch& args, StreamPtr stream);
size_t NormBackwardWorkspaceBytes(int64_t rows, int64_t cols);
void LaunchNormBackward(const NormLaunch& args, void* workspace, StreamPtr stream);

// ---- loss.cu ----
size_t CrossEntropyWorkspaceBytes(int64_t rows);
// loss[0] = mean over counted rows of (logsumexp - logit[target]); dlogits (may alias logits),
// times scale[0] (a device f32) when scale is set.
void LaunchCrossEntropy(FloatType type, const void* logits, const int32_t* targets, void* dlogits,
                        int64_t rows, int64_t vocab, int32_t ignore_index, const float* scale,
                        float* loss, void* workspace, StreamPtr stream);
// dtable (vocab, cols) f32 = per id, the sum of dy rows in order of i (deterministic), for n up
// to kMaxEmbeddingBackwardIds (a position is 32 bits of a sort key).
constexpr int64_t kMaxEmbeddingBackwardIds = 0xffffffffLL;
void LaunchEmbeddingBackward(FloatType type, const void* dy, const int32_t* ids, float* dtable,
                             int64_t n, int64_t vocab, int64_t cols, StreamPtr stream);

// ---- rope.cu (in eltwise.cu) ----
void LaunchRope(FloatType type, const void* x, void* y, int64_t batch, int64_t seq, int n_head,
                int n_kv_head, int head_dim, const float* cos, const float* sin, bool inverse,
                StreamPtr stream);

// ---- attention.cu (Note [CUDA attention scheme]) and attention_tc.cu (Note [Tensor-core
// attention]) ----
// Which kernels run an attention launch (Note [Choosing the attention kernels] in attention.cu):
// kAuto takes the tensor-core kernels where they apply (the mma.sync kernels of attention_mma.cu
// and, at head_dim 64, attention_mma_backward.cu; else wmma) unless KILN_CUDA_ATTENTION says
// otherwise; the tests force each. kTensorCoreWmma is kTensorCore on the wmma kernels of
// attention_tc.cu only. A tensor-core choice on a launch the tensor-core kernels cannot take
// aborts.
enum class AttentionImpl : uint8_t { kAuto, kSimple, kTensorCore, kTensorCoreWmma };
struct AttentionLaunch {
  AttentionImpl impl = AttentionImpl::kAuto;
  FloatType type = FloatType::kF32;
  int64_t batch = 0;
  int64_t seq = 0;
  int n_head = 1;
  int n_kv_head = 1;
  int head_dim = 1;
  bool causal = true;
  float scale = 1.0f;
  const void* qkv = nullptr;   // (B, T, (H + 2 Hkv) D)
  void* out = nullptr;         // (B, T, H D)
  float* lse = nullptr;        // (B, H, T)
  const void* dout = nullptr;  // backward: (B, T, H D)
  void* dqkv = nullptr;        // backward: (B, T, (H + 2 Hkv) D)
};
constexpr int kMaxAttentionHeadDim = 128;
void LaunchAttentionForward(const AttentionLaunch& args, StreamPtr stream);
size_t AttentionBackwardWorkspaceBytes(int64_t batch, int n_head, int64_t seq);
void LaunchAttentionBackward(const AttentionLaunch& args, void* workspace, StreamPtr stream);
// The tensor-core kernels (attention_tc.cu), called by the two above. Available: whether they can
// take `args` on the current device (16-bit storage, head_dim 64 or 128, 16-byte aligned tensors,
// enough shared memory per block). The backward takes delta (B, H, T) f32 = rowsum(dout * out),
// computed by attention.cu, and writes every element of dqkv.
bool AttentionTensorCoreAvailable(const AttentionLaunch& args);
void LaunchAttentionForwardTensorCore(const AttentionLaunch& args, StreamPtr stream);  // wmma
void LaunchAttentionForwardMma(const AttentionLaunch& args, StreamPtr stream);  // attention_mma.cu
// attention_mma_backward.cu: head_dim 64 (where Takes says so), otherwise the wmma backward runs.
bool AttentionBackwardMmaTakes(const AttentionLaunch& args);
void LaunchAttentionBackwardMma(const AttentionLaunch& args, const float* delta, StreamPtr stream);
void LaunchAttentionBackwardTensorCore(const AttentionLaunch& args, const float* delta,
                                       StreamPtr stream);

// ---- optim.cu ----
// One block's share of the fused AdamW (Note [AdamW chunks] in adam_table.h): `length` elements
// from `offset`, an offset into master, grads, params and the moments alike (Note [Device AdamW
// state layout]), all of one parameter segment.
struct AdamChunk {
  int64_t offset = 0;
  int32_t length = 0;        // 1 .. kAdamChunkElements
  int32_t weight_decay = 1;  // 0: no decay for this chunk's segment
};
constexpr int64_t kAdamChunkElements = 8192;
struct AdamLaunch {
  float* master = nullptr;
  const void* grads = nullptr;
  FloatType grad_type = FloatType::kF32;
  void* params = nullptr;  // optional low-precision copy
  FloatType param_type = FloatType::kF32;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  const AdamChunk* chunks = nullptr;  // device array, one per block
  int64_t num_chunks = 0;             // at most kMaxGridX (launch_geometry.h)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float step_size = 0;     // lr / bias_correction1
  float inv_bc2_sqrt = 1;  // 1 / sqrt(bias_correction2)
  float grad_scale = 1;
  float lr_weight_decay = 0;  // lr * weight_decay
};
void LaunchAdamW(const AdamLaunch& args, StreamPtr stream);

}  // namespace kiln::kernels::cuda
