// Reduction CPU kernels (sum, mean, sum_to) against double-precision references on every ISA path,
// and bit-exact independence of the thread count (Note [Fixed blockings] in kernels/cpu/isa_api.h).
#include "engine/ops/attrs/elementwise.h"
#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

TEST_CASE("sum and mean match the reference for any thread count", "[kernels][reduce]") {
  // Spans several fixed blocks with a ragged last one.
  const Shape shape{3, 33337};
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor x = RandomTensor(shape, dtype, 21, 0.0f, 1.0f);
      double ref = 0;
      for (double v : ToDoubles(x)) ref += v;
      Tensor sums[2], means[2];
      for (int threads : {1, 2}) {
        ThreadScope ts(threads);
        sums[threads - 1] = RunKernel("sum", dtype, {x}, {Tensor::Zeros({1}, DType::kF32)})[0];
        means[threads - 1] = RunKernel("mean", dtype, {x}, {Tensor::Zeros({1}, DType::kF32)})[0];
      }
      KILN_REQUIRE_CLOSE(sums[0].ToFloats(), std::vector<float>{static_cast<float>(ref)}, kTolF32);
      KILN_REQUIRE_CLOSE(means[0].ToFloats(),
                         std::vector<float>{static_cast<float>(ref / x.numel())}, kTolF32);
      REQUIRE(BitEqual(sums[0], sums[1]));
      REQUIRE(BitEqual(means[0], means[1]));
    }
  }
}

TEST_CASE("sum_to sums leading axes for any thread count", "[kernels][reduce]") {
  // (input, target): row blocks, wide columns, a narrow target, many rows, nothing to sum.
  const std::pair<Shape, Shape> cases[] = {{{37, 5, 72}, {72}},
                                           {{3, 4100}, {4100}},
                                           {{5000, 3}, {3}},
                                           {{4, 37, 72}, {37, 72}},
                                           {{37, 72}, {37, 72}}};
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      for (const auto& [in_shape, out_shape] : cases) {
        INFO(CpuIsaName(isa) << " " << dtype << " " << ShapeToString(in_shape) << " -> "
                             << ShapeToString(out_shape));
        const Tensor dy = RandomTensor(in_shape, dtype, 22);
        const int64_t cols = NumElements(out_shape), rows = dy.numel() / cols;
        const std::vector<double> v = ToDoubles(dy);
        std::vector<double> ref(cols, 0.0);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) ref[c] += v[r * cols + c];
        }
        Tensor out[2];
        for (int threads : {1, 2}) {
          ThreadScope ts(threads);
          out[threads - 1] = RunKernel("sum_to", dtype, {dy}, {Tensor::Zeros(out_shape, dtype)},
                                       ops::SumToAttrs{out_shape})[0];
        }
        KILN_REQUIRE_CLOSE(out[0].ToFloats(), ToFloatVector(ref), Tolerance(dtype));
        REQUIRE(BitEqual(out[0], out[1]));
      }
    }
  }
}

}  // namespace
}  // namespace kiln::testing
