// The boundary between the kernel registrations (compiled once, no ISA flags) and the kernel
// bodies (compiled once per ISA): plain argument structs, one table of entry points per ISA, and
// the fixed blockings that make reductions independent of the thread count.
// See Note [One body, three ISAs] in vec/vec.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/core/dtype.h"

namespace kiln::kernels::cpu {

// y = alpha * x (kScale: scale, scale_by and cast; any pair of float dtypes), or y = gelu(x) /
// silu(x) (x and y of one dtype). y may alias x when the dtypes match.
enum class UnaryOp : uint8_t { kScale, kGelu, kSilu };
struct UnaryArgs {
  UnaryOp op = UnaryOp::kScale;
  DType x_dtype = DType::kF32;
  DType y_dtype = DType::kF32;
  const void* x = nullptr;  // (n)
  void* y = nullptr;        // (n)
  int64_t n = 0;
  float alpha = 1.0f;
};

// out = a + b, a * b, dy * gelu'(x) or dy * silu'(x) (a = dy, b = x). out has a's dtype and may
// alias a. b repeats every b_n elements (b_n == n: same shape); only kAdd broadcasts, and only
// kAdd takes a b dtype different from a's (accumulate_grad adds bf16 into f32).
enum class BinaryOp : uint8_t { kAdd, kMul, kGeluBackward, kSiluBackward };
struct BinaryArgs {
  BinaryOp op = BinaryOp::kAdd;
  DType a_dtype = DType::kF32;
  DType b_dtype = DType::kF32;
  const void* a = nullptr;  // (n)
  const void* b = nullptr;  // (b_n)
  void* out = nullptr;      // (n)
  int64_t n = 0;
  int64_t b_n = 0;
};

// Forward: out (rows, f) = silu(gate) * up with gu (rows, 2f) = [gate | up]; dy unused.
// Backward: out = d(gu) (rows, 2f) from dy (rows, f).
struct SwigluArgs {
  DType dtype = DType::kF32;
  const void* dy = nullptr;
  const void* gu = nullptr;
  void* out = nullptr;
  int64_t rows = 0;
  int64_t f = 0;
};

struct FillArgs {
  DType dtype = DType::kF32;
  void* out = nullptr;  // (n)
  int64_t n = 0;
  float value = 0.0f;
};

// y = keep ? x / (1 - p) : 0 with the mask from Philox under `key` (see Note [Dropout stream]).
struct DropoutArgs {
  DType dtype = DType::kF32;
  const void* x = nullptr;  // (n)
  void* y = nullptr;        // (n)
  int64_t n = 0;
  float p = 0.0f;
  uint64_t key = 0;
};

// out[0] = scale * sum(x), f32. partials: SumBlockCount(n) doubles of workspace.
struct SumArgs {
  DType dtype = DType::kF32;
  const void* x = nullptr;  // (n)
  int64_t n = 0;
  double scale = 1.0;
  float* out = nullptr;  // (1)
  double* partials = nullptr;
};

// out (cols) = sum over rows of x (rows, cols); out has x's dtype. partials: SumToWorkspaceFloats.
struct SumToArgs {
  DType dtype = DType::kF32;
  const void* x = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  void* out = nullptr;
  float* partials = nullptr;
};

// Layer norm (rms = false) or RMS norm (rms = true; beta and mean unused) over the last axis.
struct NormArgs {
  bool rms = false;
  DType dtype = DType::kF32;
  const void* x = nullptr;       // (rows, cols)
  const float* gamma = nullptr;  // (cols)
  const float* beta = nullptr;   // (cols)
  void* y = nullptr;             // (rows, cols)
  float* mean = nullptr;         // (rows)
  float* rstd = nullptr;         // (rows)
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-5f;
};

// dx, dgamma (and dbeta for layer norm). partials: NormBackwardWorkspaceFloats.
struct NormBackwardArgs {
  bool rms = false;
  DType dtype = DType::kF32;
  const void* dy = nullptr;        // (rows, cols)
  const void* x = nullptr;         // (rows, cols)
  const float* gamma = nullptr;    // (cols)
  const float* mean = nullptr;     // (rows)
  const float* rstd = nullptr;     // (rows)
  void* dx = nullptr;              // (rows, cols)
  float* dgamma = nullptr;         // (cols)
  float* dbeta = nullptr;          // (cols)
  const void* residual = nullptr;  // optional (rows, cols): dx = dx + residual (dx rounded first)
  int64_t rows = 0;
  int64_t cols = 0;
  float* partials = nullptr;
};

// Rotary embedding on packed qkv (see engine/ops/attrs/attention.h); y may alias x.
struct RopeArgs {
  DType dtype = DType::kF32;
  const void* x = nullptr;  // (B, T, (H + 2 Hkv) D)
  void* y = nullptr;        // (B, T, (H + 2 Hkv) D)
  int64_t batch = 0;
  int64_t seq = 0;
  int n_head = 1;
  int n_kv_head = 1;
  int head_dim = 2;
  const float* cos = nullptr;  // (T, D/2) f32
  const float* sin = nullptr;  // (T, D/2) f32
  bool inverse = false;
};

// Fused attention. Forward reads qkv, writes out and lse; backward reads dout, qkv, out, lse and
// writes dqkv. workspace: AttentionWorkspaceBytes per thread.
struct AttentionArgs {
  DType dtype = DType::kF32;
  int64_t batch = 0;
  int64_t seq = 0;
  int n_head = 1;
  int n_kv_head = 1;
  int head_dim = 1;
  bool causal = true;
  float scale = 1.0f;
  const void* qkv = nullptr;   // (B, T, (H + 2 Hkv) D)
  void* out = nullptr;         // (B, T, H D); const in the backward
  float* lse = nullptr;        // (B, H, T); const in the backward
  const void* dout = nullptr;  // (B, T, H D)
  void* dqkv = nullptr;        // (B, T, (H + 2 Hkv) D)
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Per row: row_loss = logsumexp(logits) - logits[target] and dlogits = (softmax - onehot) / counted
// (zero and zero loss for ignored rows). dlogits may alias logits. scratch: CrossEntropyScratch
// floats per thread.
struct CrossEntropyArgs {
  DType dtype = DType::kF32;
  const void* logits = nullptr;      // (rows, vocab)
  const int32_t* targets = nullptr;  // (rows)
  void* dlogits = nullptr;           // (rows, vocab)
  int64_t rows = 0;
  int64_t vocab = 0;
  int32_t ignore_index = -100;
  int64_t counted = 0;
  float* row_loss = nullptr;  // (rows) f32, workspace
  float* scratch = nullptr;   // (threads, CrossEntropyScratch(vocab)) f32, workspace
  size_t scratch_bytes = 0;
};
// One row of exp(x - max) per thread, padded to a cache line.
inline int64_t CrossEntropyScratch(int64_t vocab) { return (vocab + 15) / 16 * 16; }

// dtable (vocab, cols) f32 = 0, then dtable[ids[i]] += dy[i] in order of i.
struct EmbeddingBackwardArgs {
  DType dtype = DType::kF32;
  const void* dy = nullptr;      // (n, cols)
  const int32_t* ids = nullptr;  // (n)
  float* dtable = nullptr;       // (vocab, cols)
  int64_t n = 0;
  int64_t vocab = 0;
  int64_t cols = 0;
};

// The entry points one ISA provides. Each per-ISA library defines its kIsaKernels.
struct IsaKernels {
  void (*unary)(const UnaryArgs&);
  void (*binary)(const BinaryArgs&);
  void (*swiglu)(const SwigluArgs&);
  void (*swiglu_backward)(const SwigluArgs&);
  void (*fill)(const FillArgs&);
  void (*dropout)(const DropoutArgs&);
  void (*sum)(const SumArgs&);
  void (*sum_to)(const SumToArgs&);
  void (*norm)(const NormArgs&);
  void (*norm_backward)(const NormBackwardArgs&);
  void (*rope)(const RopeArgs&);
  void (*attention)(const AttentionArgs&);
  void (*attention_backward)(const AttentionArgs&);
  void (*cross_entropy)(const CrossEntropyArgs&);
  void (*embedding_backward)(const EmbeddingBackwardArgs&);
};

namespace avx512 {
extern const IsaKernels kIsaKernels;
}
namespace avx2 {
extern const IsaKernels kIsaKernels;
}
namespace scalar {
extern const IsaKernels kIsaKernels;
}

// The table for kiln::ActiveCpuIsa(), read at every call so that SetCpuIsaOverride takes effect.
const IsaKernels& Isa();

// Note [Fixed blockings]
// Reductions split their input into blocks whose size depends only on the shape, never on the
// thread count, sum each block in a fixed order into its own partial, and combine the partials in
// block order. Threads only decide which blocks they take, so the result is bit-identical for any
// thread count (for one ISA: vector width changes the order within a block).

// sum / mean: blocks of kSumBlock elements.
constexpr int64_t kSumBlock = int64_t{1} << 14;
inline int64_t SumBlockCount(int64_t n) { return n <= 0 ? 1 : (n + kSumBlock - 1) / kSumBlock; }

// Row blocks for reductions over rows: at most kMaxRowBlocks blocks of at least kMinBlockRows.
struct RowBlocking {
  int64_t count = 1;
  int64_t rows_per_block = 0;
};
constexpr int64_t kMaxRowBlocks = 64;
constexpr int64_t kMinBlockRows = 8;
inline RowBlocking FixedRowBlocks(int64_t rows) {
  RowBlocking b;
  b.count = (rows + kMinBlockRows - 1) / kMinBlockRows;
  if (b.count > kMaxRowBlocks) b.count = kMaxRowBlocks;
  if (b.count < 1) b.count = 1;
  b.rows_per_block = (rows + b.count - 1) / b.count;
  if (b.rows_per_block < 1) b.rows_per_block = 1;
  b.count = (rows + b.rows_per_block - 1) / b.rows_per_block;
  if (b.count < 1) b.count = 1;
  return b;
}

// sum_to: wide outputs split by columns (no partials); narrow ones use row blocks.
constexpr int64_t kSumToWideCols = 4096;
inline bool SumToByColumns(int64_t rows, int64_t cols) {
  return cols >= kSumToWideCols || FixedRowBlocks(rows).count == 1;
}
inline int64_t SumToWorkspaceFloats(int64_t rows, int64_t cols) {
  return SumToByColumns(rows, cols) ? 0 : FixedRowBlocks(rows).count * cols;
}

// norm backward: per row block, partial dgamma and dbeta.
inline int64_t NormBackwardWorkspaceFloats(int64_t rows, int64_t cols) {
  return FixedRowBlocks(rows).count * 2 * cols;
}

}  // namespace kiln::kernels::cpu
