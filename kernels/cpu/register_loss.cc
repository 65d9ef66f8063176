// CPU kernels of the fused loss and the lookups (engine/ops/attrs/loss.h): cross_entropy (loss
// and dlogits in one pass; dispatch on logits), embedding (dispatch on the table) and
// embedding_backward (dispatch on dy; deterministic).
#include <cstring>

#include "engine/core/parallel.h"
#include "engine/ops/attrs/loss.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

// cross_entropy(logits, targets) -> (loss f32 [1], dlogits like logits). dlogits may alias logits.
// cross_entropy_scaled: then dlogits *= scale[0], exactly as scale_by would.
class CrossEntropyKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const Tensor& logits = ctx.input(0);
    return RowLossBytes(logits) + ScratchBytes(logits);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& logits = ctx.input(0);    // (..., V)
    const Tensor& targets = ctx.input(1);   // (...) i32
    const Tensor& loss = ctx.output(0);     // [1] f32
    const Tensor& dlogits = ctx.output(1);  // (..., V)
    const CrossEntropyShape shape = CheckCrossEntropy(ctx, DeviceType::kCPU);
    const int64_t rows = shape.rows, vocab = shape.vocab;
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "cross_entropy workspace";
    const int ignore_index = ctx.attrs_as<ops::CrossEntropyAttrs>().ignore_index;
    const int32_t* t = targets.data<int32_t>();
    int64_t counted = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (t[r] == ignore_index) continue;
      KILN_CHECK(t[r] >= 0 && t[r] < vocab)
          << "target " << t[r] << " at row " << r << " of " << vocab;
      ++counted;
    }
    float* row_loss = static_cast<float*>(ctx.workspace);  // (rows)
    if (rows > 0 && vocab > 0) {
      CrossEntropyArgs args;
      args.dtype = logits.dtype();
      args.logits = logits.raw_data();
      args.targets = t;
      args.dlogits = dlogits.raw_data();
      args.rows = rows;
      args.vocab = vocab;
      args.ignore_index = ignore_index;
      args.counted = counted;
      args.row_loss = row_loss;
      args.scratch =
          reinterpret_cast<float*>(static_cast<char*>(ctx.workspace) + RowLossBytes(logits));
      args.scratch_bytes = ScratchBytes(logits);
      Isa().cross_entropy(args);
    }
    // Note [Cross-entropy with no counted rows]: the mean over zero rows is defined here as 0
    // (with a zero gradient) rather than PyTorch's NaN, so a fully padded micro-batch is harmless.
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
    loss.data<float>()[0] = counted > 0 ? static_cast<float>(total / counted) : 0.0f;
    if (shape.scaled) {  // the body of scale_by, over the dlogits just written
      Isa().unary({UnaryOp::kScale, dlogits.dtype(), dlogits.dtype(), dlogits.raw_data(),
                   dlogits.raw_data(), dlogits.numel(), ctx.input(2).data<float>()[0]});
    }
  }

 private:
  // Workspace: the per-row losses, then one scratch row per thread (cache-line aligned).
  static size_t RowLossBytes(const Tensor& logits) {
    return (static_cast<size_t>(Rows(logits)) * sizeof(float) + 63) / 64 * 64;
  }
  static size_t ScratchBytes(const Tensor& logits) {
    return static_cast<size_t>(CrossEntropyScratch(LastDim(logits))) * sizeof(float) *
           static_cast<size_t>(NumThreads());
  }
};

// embedding(table, ids) -> out: row copies, any dtype.
void RunEmbedding(const KernelContext& ctx) {
  const Tensor& table = ctx.input(0);  // (V, C)
  const Tensor& ids = ctx.input(1);    // (...) i32
  const Tensor& out = ctx.output(0);   // (..., C)
  const EmbeddingShape shape = CheckEmbedding(ctx, DeviceType::kCPU);
  const int64_t n = shape.n, vocab = shape.vocab, cols = shape.cols;
  const int32_t* id = ids.data<int32_t>();
  const size_t row_bytes = static_cast<size_t>(cols) * table.element_size();
  const char* src = static_cast<const char*>(table.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  const int64_t grain = row_bytes >= 16384 ? 1 : static_cast<int64_t>(16384 / (row_bytes + 1)) + 1;
  ParallelForInline(n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      KILN_CHECK(id[i] >= 0 && id[i] < vocab) << "id " << id[i] << " outside [0, " << vocab << ")";
      std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes);
    }
  });
}

// embedding_backward(dy, ids) -> dtable (V, C) f32.
void RunEmbeddingBackward(const KernelContext& ctx) {
  const Tensor& dy = ctx.input(0);       // (..., C)
  const Tensor& ids = ctx.input(1);      // (...) i32
  const Tensor& dtable = ctx.output(0);  // (V, C) f32
  const EmbeddingShape shape = CheckEmbeddingBackward(ctx, DeviceType::kCPU);
  const int64_t n = shape.n, vocab = shape.vocab, cols = shape.cols;
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    KILN_CHECK(id[i] >= 0 && id[i] < vocab) << "id " << id[i] << " outside [0, " << vocab << ")";
  }
  Isa().embedding_backward({dy.dtype(), dy.raw_data(), id, dtable.data<float>(), n, vocab, cols});
}

}  // namespace

KILN_REGISTER_FLOAT_KERNELS("cross_entropy", kCPU, CrossEntropyKernel);
KILN_REGISTER_FLOAT_KERNELS("cross_entropy_scaled", kCPU, CrossEntropyKernel);
KILN_REGISTER_FLOAT_KERNEL_FNS("embedding", kCPU, RunEmbedding);
KILN_REGISTER_FLOAT_KERNEL_FNS("embedding_backward", kCPU, RunEmbeddingBackward);

}  // namespace kiln::kernels::cpu
