// Reduction kernel bodies (compiled once per ISA): sum / mean of all elements and sum_to (sum over
// leading axes). Both follow Note [Fixed blockings] in isa_api.h, so results do not depend on the
// thread count.
#include "engine/core/parallel.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

template <typename T>
void SumTyped(const SumArgs& args) {
  const T* x = static_cast<const T*>(args.x);  // (n)
  const int64_t blocks = SumBlockCount(args.n);
  ParallelForInline(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t lo = b * kSumBlock;
      const int64_t hi = lo + kSumBlock < args.n ? lo + kSumBlock : args.n;
      args.partials[b] = ReduceSum(lo, hi, [&](int64_t i, int w) { return LoadN(x + i, w); });
    }
  });
  double total = 0;
  for (int64_t b = 0; b < blocks; ++b) total += args.partials[b];
  args.out[0] = static_cast<float>(total * args.scale);
}

// Columns per chunk when sum_to splits by columns; the accumulator lives on the stack.
constexpr int64_t kColumnChunk = 512;

// out[c] = sum_r x[r, c] with each thread owning whole column chunks.
template <typename T>
void SumColumnsDirect(const T* x, T* out, int64_t rows, int64_t cols) {
  const int64_t chunks = (cols + kColumnChunk - 1) / kColumnChunk;
  ParallelForInline(chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float acc[kColumnChunk];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t c0 = chunk * kColumnChunk;
      const int64_t width = cols - c0 < kColumnChunk ? cols - c0 : kColumnChunk;
      ForEachVector(0, width, [&](int64_t i, int w) { StoreN(Vec::Zero(), acc + i, w); });
      for (int64_t r = 0; r < rows; ++r) {
        const T* row = x + r * cols + c0;
        ForEachVector(0, width, [&](int64_t i, int w) {
          StoreN(LoadN(acc + i, w) + LoadN(row + i, w), acc + i, w);
        });
      }
      ForEachVector(0, width,
                    [&](int64_t i, int w) { StoreN(LoadN(acc + i, w), out + c0 + i, w); });
    }
  });
}

template <typename T>
void SumToTyped(const SumToArgs& args) {
  const T* x = static_cast<const T*>(args.x);  // (rows, cols)
  T* out = static_cast<T*>(args.out);          // (cols)
  const int64_t rows = args.rows, cols = args.cols;
  if (SumToByColumns(rows, cols)) {
    SumColumnsDirect(x, out, rows, cols);
    return;
  }
  const RowBlocking blocking = FixedRowBlocks(rows);
  ParallelForInline(blocking.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* partial = args.partials + b * cols;  // (cols)
      const int64_t r0 = b * blocking.rows_per_block;
      const int64_t r1 = r0 + blocking.rows_per_block < rows ? r0 + blocking.rows_per_block : rows;
      ForEachVector(0, cols, [&](int64_t i, int w) { StoreN(Vec::Zero(), partial + i, w); });
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + r * cols;
        ForEachVector(0, cols, [&](int64_t i, int w) {
          StoreN(LoadN(partial + i, w) + LoadN(row + i, w), partial + i, w);
        });
      }
    }
  });
  ParallelForInline(cols, kColumnChunk, [&](int64_t begin, int64_t end) {
    ForEachVector(begin, end, [&](int64_t i, int w) {
      Vec acc = Vec::Zero();
      for (int64_t b = 0; b < blocking.count; ++b)
        acc = acc + LoadN(args.partials + b * cols + i, w);
      StoreN(acc, out + i, w);
    });
  });
}

}  // namespace

void Sum(const SumArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { SumTyped<decltype(t)>(args); });
}

void SumTo(const SumToArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { SumToTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
