// Helpers shared by the CPU kernel tests: reproducible random tensors, running a test body under
// every ISA this CPU can execute, and thread-count scopes.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/core/cpu_features.h"
#include "engine/core/parallel.h"
#include "engine/core/tensor.h"
#include "tests/testing.h"

namespace kiln::testing {

// Uniform values in [lo, hi) rounded to `dtype` (so ToFloats() gives exactly what kernels read).
inline Tensor RandomTensor(const Shape& shape, DType dtype, uint32_t seed, float lo = -1.0f,
                           float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(static_cast<size_t>(NumElements(shape)));
  for (float& v : values) v = dist(gen);
  return Tensor::FromFloats(values, shape, dtype);
}

// Values as double, for references.
inline std::vector<double> ToDoubles(const Tensor& t) {
  const std::vector<float> f = t.ToFloats();
  return std::vector<double>(f.begin(), f.end());
}

inline std::vector<float> ToFloatVector(const std::vector<double>& d) {
  return std::vector<float>(d.begin(), d.end());
}

// The ISAs to test on this CPU, best first: AVX-512 and AVX2 where supported, and always scalar.
inline std::vector<CpuIsa> TestIsas() {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<CpuIsa> isas;
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) isas.push_back(CpuIsa::kAvx512);
  if (f.avx2 && f.fma) isas.push_back(CpuIsa::kAvx2);
  isas.push_back(CpuIsa::kScalar);
  return isas;
}

// Forces an ISA for the scope's lifetime.
class IsaScope {
 public:
  explicit IsaScope(CpuIsa isa) : previous_(ActiveCpuIsa()) { SetCpuIsaOverride(isa); }
  ~IsaScope() { SetCpuIsaOverride(previous_); }

 private:
  CpuIsa previous_;
};

// Sets the kernel thread count for the scope's lifetime.
class ThreadScope {
 public:
  explicit ThreadScope(int n) : previous_(NumThreads()) { SetNumThreads(n); }
  ~ThreadScope() { SetNumThreads(previous_); }

 private:
  int previous_;
};

// Tolerances (relative L2 against a double-precision reference computed from the same inputs).
constexpr double kTolF32 = 1e-5;
constexpr double kTolBF16 = 1e-2;
constexpr double kTolF16 = 2e-3;

inline double Tolerance(DType dtype) {
  return dtype == DType::kF32 ? kTolF32 : dtype == DType::kBF16 ? kTolBF16 : kTolF16;
}

// Bit-exact equality of two tensors' contents.
inline bool BitEqual(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

}  // namespace kiln::testing
