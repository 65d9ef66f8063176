// Deterministic gradient norms and finiteness checks.
#include "engine/optim/grad_utils.h"

#include <cmath>
#include <vector>

#include "engine/core/parallel.h"

namespace kiln::optim {

namespace {

constexpr int64_t kChunk = 1 << 16;

// Reduces fn(chunk_begin, chunk_end) over fixed chunks of [0, n), combining in chunk order.
template <typename Fn>
double ChunkedSum(int64_t n, Fn&& fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  ParallelForInline(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) partial[c] = fn(c * kChunk, std::min(n, (c + 1) * kChunk));
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

double SquaredNorm(const Tensor& flat) {
  return DispatchFloating(flat.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(flat.raw_data());
    return ChunkedSum(flat.numel(), [&](int64_t lo, int64_t hi) {
      double s = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const double x = static_cast<float>(g[i]);
        s += x * x;
      }
      return s;
    });
  });
}

bool AllFinite(const Tensor& flat) {
  // Any inf or NaN makes the sum of x*0 NaN.
  const double poisoned = DispatchFloating(flat.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(flat.raw_data());
    return ChunkedSum(flat.numel(), [&](int64_t lo, int64_t hi) {
      float acc = 0;
      for (int64_t i = lo; i < hi; ++i) acc += static_cast<float>(g[i]) * 0.0f;
      return static_cast<double>(acc);
    });
  });
  return std::isfinite(poisoned);
}

}  // namespace kiln::optim
