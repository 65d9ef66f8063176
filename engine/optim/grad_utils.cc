// Deterministic norms and element-wise gradient scaling.
#include "engine/optim/grad_utils.h"

#include <cmath>
#include <vector>

#include "engine/core/parallel.h"

namespace kiln::optim {

namespace {
constexpr int64_t kChunk = 1 << 16;
}

double SquaredNorm(const float* g, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  ParallelForInline(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(g[i]) * g[i];
      partial[c] = s;
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void ScaleInPlace(float* g, int64_t n, float factor) {
  ParallelForInline(n, kChunk, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) g[i] *= factor;
  });
}

bool AllFinite(const float* g, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<char> ok(static_cast<size_t>(chunks), 1);
  ParallelForInline(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = lo; i < hi; ++i) acc += g[i] * 0.0f;  // NaN iff some g is inf or NaN
      ok[c] = std::isfinite(acc) ? 1 : 0;
    }
  });
  for (char c : ok) {
    if (!c) return false;
  }
  return true;
}

}  // namespace kiln::optim
