// The oneDNN matmul kernel against a double-precision reference: every transpose combination,
// batched a with a shared 2-D b, batched b, odd sizes, f32 / bf16 / f16, and repeated runs.
#include "engine/ops/attrs/matmul.h"

#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

// out (batch, M, N) = op(a) op(b) with b shared when b_batch == 1.
std::vector<double> ReferenceMatmul(const std::vector<double>& a, const std::vector<double>& b,
                                    int64_t batch, int64_t m, int64_t k, int64_t n, bool trans_a,
                                    bool trans_b, bool b_batched) {
  std::vector<double> out(batch * m * n, 0.0);
  for (int64_t bi = 0; bi < batch; ++bi) {
    const double* ab = a.data() + bi * m * k;
    const double* bb = b.data() + (b_batched ? bi * k * n : 0);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) {
          acc +=
              (trans_a ? ab[p * m + i] : ab[i * k + p]) * (trans_b ? bb[j * k + p] : bb[p * n + j]);
        }
        out[bi * m * n + i * n + j] = acc;
      }
    }
  }
  return out;
}

TEST_CASE("matmul matches the reference for every layout and dtype", "[kernels][matmul]") {
  const int64_t m = 37, k = 72, n = 45;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        for (int64_t batch : {int64_t{1}, int64_t{3}}) {
          for (bool b_batched : {false, true}) {
            if (b_batched && batch == 1) continue;
            INFO(dtype << " trans_a " << trans_a << " trans_b " << trans_b << " batch " << batch
                       << " b_batched " << b_batched);
            Shape a_shape = trans_a ? Shape{k, m} : Shape{m, k};
            Shape b_shape = trans_b ? Shape{n, k} : Shape{k, n};
            Shape out_shape{m, n};
            if (batch > 1) {
              a_shape.insert(a_shape.begin(), batch);
              out_shape.insert(out_shape.begin(), batch);
              if (b_batched) b_shape.insert(b_shape.begin(), batch);
            }
            const Tensor a = RandomTensor(a_shape, dtype, 61);
            const Tensor b = RandomTensor(b_shape, dtype, 62);
            testing::KernelRunner runner("matmul", dtype, {a, b}, {Tensor::Zeros(out_shape, dtype)},
                                         ops::MatmulAttrs{trans_a, trans_b});
            runner.Run();
            runner.Run();  // a cached primitive runs again
            const std::vector<double> ref = ReferenceMatmul(ToDoubles(a), ToDoubles(b), batch, m, k,
                                                            n, trans_a, trans_b, b_batched);
            KILN_REQUIRE_CLOSE(runner.output(0).ToFloats(), ToFloatVector(ref), Tolerance(dtype));
          }
        }
      }
    }
  }
}

TEST_CASE("matmul folds leading axes of a into rows", "[kernels][matmul]") {
  // (2, 3, 37, 72) x (72, 45): one 2-D product over 222 rows.
  const Tensor a = RandomTensor({2, 3, 37, 72}, DType::kF32, 63);
  const Tensor b = RandomTensor({72, 45}, DType::kF32, 64);
  const Tensor out = RunKernel("matmul", DType::kF32, {a, b},
                               {Tensor::Zeros({2, 3, 37, 45}, DType::kF32)}, ops::MatmulAttrs{})[0];
  const std::vector<double> ref =
      ReferenceMatmul(ToDoubles(a), ToDoubles(b), 1, 6 * 37, 72, 45, false, false, false);
  KILN_REQUIRE_CLOSE(out.ToFloats(), ToFloatVector(ref), kTolF32);
}

}  // namespace
}  // namespace kiln::testing
