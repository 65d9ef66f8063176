// Loss and lookup-gradient bodies (compiled once per ISA): fused softmax cross-entropy (loss per
// row and dlogits in one sweep of the logits) and the embedding gradient (deterministic: threads
// own column ranges, rows are added in id order).
#include <omp.h>

#include <cmath>

#include "engine/core/parallel.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec.h"
#include "kernels/cpu/vec/vec_math.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

// Note [Fused cross-entropy]
// Per row, three passes: the max of the logits; e = exp(x - max) into the thread's f32 scratch row
// and its sum; then dlogits = e / sum / counted, with 1 / counted subtracted at the target. The
// first pass brings the row into cache (rows up to ~100k f32 logits plus the scratch row fit in
// L2), so DRAM sees one read and one write per element, and each exp is computed once. The exp
// pass prefetches the next row into L2, so DRAM keeps streaming while the core computes.
// logits[target] is read before anything is written, so dlogits may alias logits. The row losses
// land in a workspace array that the caller sums in row order.
template <typename T>
void CrossEntropyTyped(const CrossEntropyArgs& args) {
  const int64_t vocab = args.vocab;
  const T* logits = static_cast<const T*>(args.logits);  // (rows, V)
  T* dlogits = static_cast<T*>(args.dlogits);            // (rows, V)
  const float inv_counted = args.counted > 0 ? 1.0f / static_cast<float>(args.counted) : 0.0f;
  ParallelForInline(args.rows, 1, [&](int64_t begin, int64_t end) {
    const int tid = omp_get_thread_num();
    const int64_t scratch_floats = CrossEntropyScratch(vocab);
    KILN_CHECK(static_cast<size_t>((tid + 1) * scratch_floats) * sizeof(float) <=
               args.scratch_bytes)
        << "cross_entropy scratch too small for thread " << tid;
    float* e = args.scratch + tid * scratch_floats;  // (V)
    for (int64_t r = begin; r < end; ++r) {
      const T* x = logits + r * vocab;
      T* g = dlogits + r * vocab;
      const int32_t target = args.targets[r];
      if (target == args.ignore_index) {
        ForEachVector(0, vocab, [&](int64_t j, int w) { StoreN(Vec::Zero(), g + j, w); });
        args.row_loss[r] = 0.0f;
        continue;
      }
      const float x_target = FirstLane(LoadN(x + target, 1));
      const float row_max =
          ReduceMaxOver(0, vocab, [&](int64_t j, int w) { return LoadN(x + j, w); });
      const Vec mx = Vec::Broadcast(row_max);
      // While this row is in the exp pass (the longest), the next row streams into L2 and this
      // row's dlogits lines are fetched for writing, so DRAM stays busy while the core computes.
      const T* next = x + vocab;
      const float sum = ReduceSum(0, vocab, [&](int64_t j, int w) {
        PrefetchL2(next + j);
        PrefetchForWrite(g + j);
        const Vec ej = Exp(LoadN(x + j, w) - mx);
        StoreN(ej, e + j, w);
        return ej;
      });
      const float scale = inv_counted / sum;
      const Vec sc = Vec::Broadcast(scale);
      const float p_target = e[target] * scale;
      ForEachVector(0, vocab, [&](int64_t j, int w) { StoreN(LoadN(e + j, w) * sc, g + j, w); });
      StoreN(Vec::Broadcast(p_target - inv_counted), g + target, 1);
      args.row_loss[r] = std::log(sum) + row_max - x_target;
    }
  });
}

// Columns per block of the embedding gradient: threads take whole blocks.
constexpr int64_t kEmbeddingColumnBlock = 64;

template <typename T>
void EmbeddingBackwardTyped(const EmbeddingBackwardArgs& args) {
  const T* dy = static_cast<const T*>(args.dy);  // (n, C)
  float* dtable = args.dtable;                   // (V, C)
  const int64_t cols = args.cols;
  ParallelForInline(args.vocab * cols, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    ForEachVector(begin, end, [&](int64_t i, int w) { StoreN(Vec::Zero(), dtable + i, w); });
  });
  const int64_t blocks = (cols + kEmbeddingColumnBlock - 1) / kEmbeddingColumnBlock;
  ParallelForInline(blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * kEmbeddingColumnBlock;
    const int64_t c1 = end * kEmbeddingColumnBlock < cols ? end * kEmbeddingColumnBlock : cols;
    for (int64_t i = 0; i < args.n; ++i) {
      float* dst = dtable + static_cast<int64_t>(args.ids[i]) * cols;
      const T* src = dy + i * cols;
      ForEachVector(c0, c1, [&](int64_t j, int w) {
        StoreN(LoadN(dst + j, w) + LoadN(src + j, w), dst + j, w);
      });
    }
  });
}

}  // namespace

void CrossEntropy(const CrossEntropyArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { CrossEntropyTyped<decltype(t)>(args); });
}

void EmbeddingBackward(const EmbeddingBackwardArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { EmbeddingBackwardTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
