// CUDA kernels of the fused loss, the lookups and the reductions (engine/ops/attrs/loss.h and
// elementwise.h): cross_entropy (dispatch on logits), embedding (on the table),
// embedding_backward (on dy; deterministic), sum / mean (f32 [1] out) and sum_to.
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

class CrossEntropyKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    return CrossEntropyWorkspaceBytes(Rows(ctx.input(0)));
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& logits = ctx.input(0);    // (..., V)
    const Tensor& targets = ctx.input(1);   // (...) i32
    const Tensor& loss = ctx.output(0);     // [1] f32
    const Tensor& dlogits = ctx.output(1);  // (..., V)
    CheckTensor(logits, logits.dtype(), "cross_entropy logits");
    CheckTensor(targets, DType::kI32, "cross_entropy targets");
    CheckTensor(loss, DType::kF32, "cross_entropy loss");
    CheckTensor(dlogits, logits.dtype(), "cross_entropy dlogits");
    CheckSameShape(logits, dlogits, "cross_entropy dlogits");
    KILN_CHECK_EQ(loss.numel(), 1);
    const int64_t rows = Rows(logits), vocab = LastDim(logits);
    KILN_CHECK_EQ(targets.numel(), rows);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "cross_entropy workspace";
    LaunchCrossEntropy(ToFloatType(logits.dtype()), logits.raw_data(), targets.data<int32_t>(),
                       dlogits.raw_data(), rows, vocab,
                       ctx.attrs_as<ops::CrossEntropyAttrs>().ignore_index, loss.data<float>(),
                       ctx.workspace, LaunchStreamFor(logits));
  }
};

void RunEmbedding(const KernelContext& ctx) {
  const Tensor& table = ctx.input(0);  // (V, C)
  const Tensor& ids = ctx.input(1);    // (...) i32
  const Tensor& out = ctx.output(0);   // (..., C)
  CheckTensor(table, table.dtype(), "embedding table");
  CheckTensor(ids, DType::kI32, "embedding ids");
  CheckTensor(out, table.dtype(), "embedding output");
  KILN_CHECK_EQ(table.dim(), 2);
  const int64_t cols = table.size(1), n = ids.numel();
  KILN_CHECK_EQ(out.numel(), n * cols);
  LaunchEmbedding(table.raw_data(), ids.data<int32_t>(), out.raw_data(), n, table.size(0),
                  cols * static_cast<int64_t>(table.element_size()), LaunchStreamFor(table));
}

void RunEmbeddingBackward(const KernelContext& ctx) {
  const Tensor& dy = ctx.input(0);       // (..., C)
  const Tensor& ids = ctx.input(1);      // (...) i32
  const Tensor& dtable = ctx.output(0);  // (V, C) f32
  CheckTensor(dy, dy.dtype(), "embedding_backward dy");
  CheckTensor(ids, DType::kI32, "embedding_backward ids");
  CheckTensor(dtable, DType::kF32, "embedding_backward dtable");
  KILN_CHECK_EQ(dtable.dim(), 2);
  const int64_t vocab = dtable.size(0), cols = dtable.size(1), n = ids.numel();
  const int64_t attr_vocab = ctx.attrs_as<ops::EmbeddingAttrs>().vocab_size;
  KILN_CHECK(attr_vocab == 0 || attr_vocab == vocab) << "dtable rows " << vocab;
  KILN_CHECK_EQ(dy.numel(), n * cols);
  LaunchEmbeddingBackward(ToFloatType(dy.dtype()), dy.raw_data(), ids.data<int32_t>(),
                          dtable.data<float>(), n, vocab, cols, LaunchStreamFor(dy));
}

template <bool kMean>
class SumKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    return SumWorkspaceBytes(ctx.input(0).numel());
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& out = ctx.output(0);  // [1] f32
    CheckTensor(x, x.dtype(), "sum input");
    CheckTensor(out, DType::kF32, "sum output");
    KILN_CHECK_EQ(out.numel(), 1);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "sum workspace";
    const int64_t n = x.numel();
    const double scale = kMean ? (n > 0 ? 1.0 / static_cast<double>(n) : 0.0) : 1.0;
    LaunchSum(ToFloatType(x.dtype()), x.raw_data(), n, scale, out.data<float>(), ctx.workspace,
              LaunchStreamFor(x));
  }
};

class SumToKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const int64_t cols = ctx.output(0).numel();
    const int64_t rows = cols == 0 ? 0 : ctx.input(0).numel() / cols;
    return SumToWorkspaceBytes(rows, cols);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& dy = ctx.input(0);
    const Tensor& out = ctx.output(0);
    CheckTensor(dy, dy.dtype(), "sum_to input");
    CheckTensor(out, dy.dtype(), "sum_to output");
    const Shape& shape = ctx.attrs_as<ops::SumToAttrs>().shape;
    KILN_CHECK(out.sizes() == shape) << "sum_to output " << ShapeToString(out.sizes());
    KILN_CHECK(static_cast<int>(shape.size()) <= dy.dim()) << "sum_to target longer than input";
    for (int i = 1; i <= static_cast<int>(shape.size()); ++i) {
      KILN_CHECK_EQ(shape[shape.size() - i], dy.size(-i)) << "sum_to target is not a suffix";
    }
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "sum_to workspace";
    const int64_t cols = out.numel();
    if (cols == 0) return;
    LaunchSumTo(ToFloatType(dy.dtype()), dy.raw_data(), dy.numel() / cols, cols, out.raw_data(),
                ctx.workspace, LaunchStreamFor(dy));
  }
};

}  // namespace

#define KILN_CUDA_FLOAT_CLASSES(op, Class)       \
  KILN_REGISTER_KERNEL(op, kCUDA, kF32, Class);  \
  KILN_REGISTER_KERNEL(op, kCUDA, kBF16, Class); \
  KILN_REGISTER_KERNEL(op, kCUDA, kF16, Class)

KILN_CUDA_FLOAT_CLASSES("cross_entropy", CrossEntropyKernel);
KILN_CUDA_FLOAT_CLASSES("sum", SumKernel<false>);
KILN_CUDA_FLOAT_CLASSES("mean", SumKernel<true>);
KILN_CUDA_FLOAT_CLASSES("sum_to", SumToKernel);
KILN_REGISTER_KERNEL_FN("embedding", kCUDA, kF32, RunEmbedding);
KILN_REGISTER_KERNEL_FN("embedding", kCUDA, kBF16, RunEmbedding);
KILN_REGISTER_KERNEL_FN("embedding", kCUDA, kF16, RunEmbedding);
KILN_REGISTER_KERNEL_FN("embedding_backward", kCUDA, kF32, RunEmbeddingBackward);
KILN_REGISTER_KERNEL_FN("embedding_backward", kCUDA, kBF16, RunEmbeddingBackward);
KILN_REGISTER_KERNEL_FN("embedding_backward", kCUDA, kF16, RunEmbeddingBackward);

}  // namespace kiln::kernels::cuda
