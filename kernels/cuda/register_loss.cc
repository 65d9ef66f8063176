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
    const CrossEntropyShape shape = CheckCrossEntropy(ctx, DeviceType::kCUDA);
    const int64_t rows = shape.rows, vocab = shape.vocab;
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "cross_entropy workspace";
    LaunchCrossEntropy(ToFloatType(logits.dtype()), logits.raw_data(), targets.data<int32_t>(),
                       dlogits.raw_data(), rows, vocab,
                       ctx.attrs_as<ops::CrossEntropyAttrs>().ignore_index,
                       shape.scaled ? ctx.input(2).data<float>() : nullptr, loss.data<float>(),
                       ctx.workspace, LaunchStreamFor(logits));
  }
};

void RunEmbedding(const KernelContext& ctx) {
  const Tensor& table = ctx.input(0);  // (V, C)
  const Tensor& ids = ctx.input(1);    // (...) i32
  const Tensor& out = ctx.output(0);   // (..., C)
  const EmbeddingShape shape = CheckEmbedding(ctx, DeviceType::kCUDA);
  const int64_t n = shape.n, vocab = shape.vocab, cols = shape.cols;
  LaunchEmbedding(table.raw_data(), ids.data<int32_t>(), out.raw_data(), n, vocab,
                  cols * static_cast<int64_t>(table.element_size()), LaunchStreamFor(table));
}

void RunEmbeddingBackward(const KernelContext& ctx) {
  const Tensor& dy = ctx.input(0);       // (..., C)
  const Tensor& ids = ctx.input(1);      // (...) i32
  const Tensor& dtable = ctx.output(0);  // (V, C) f32
  const EmbeddingShape shape = CheckEmbeddingBackward(ctx, DeviceType::kCUDA);
  const int64_t n = shape.n, vocab = shape.vocab, cols = shape.cols;
  // A position shares a 64-bit sort key with its id (Note [Deterministic embedding gradient]).
  KILN_CHECK(n <= kMaxEmbeddingBackwardIds) << "embedding backward over " << n << " ids";
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
    CheckSumTo(ctx, DeviceType::kCUDA);
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "sum_to workspace";
    const int64_t cols = out.numel();
    if (cols == 0) return;
    LaunchSumTo(ToFloatType(dy.dtype()), dy.raw_data(), dy.numel() / cols, cols, out.raw_data(),
                ctx.workspace, LaunchStreamFor(dy));
  }
};

}  // namespace

KILN_REGISTER_FLOAT_KERNELS("cross_entropy", kCUDA, CrossEntropyKernel);
KILN_REGISTER_FLOAT_KERNELS("cross_entropy_scaled", kCUDA, CrossEntropyKernel);
KILN_REGISTER_FLOAT_KERNELS("sum", kCUDA, SumKernel<false>);
KILN_REGISTER_FLOAT_KERNELS("mean", kCUDA, SumKernel<true>);
KILN_REGISTER_FLOAT_KERNELS("sum_to", kCUDA, SumToKernel);
KILN_REGISTER_FLOAT_KERNEL_FNS("embedding", kCUDA, RunEmbedding);
KILN_REGISTER_FLOAT_KERNEL_FNS("embedding_backward", kCUDA, RunEmbeddingBackward);

}  // namespace kiln::kernels::cuda
