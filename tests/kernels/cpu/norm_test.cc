// Layer norm and RMS norm CPU kernels, forward and backward, against double-precision references
// on every ISA path, and bit-exact thread-count independence of dgamma / dbeta.
#include "engine/ops/attrs/norm.h"

#include <cmath>

#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
constexpr float kEps = 1e-5f;

// Reference statistics of x (rows, cols): mean and rstd per row, in double.
struct RowStats {
  std::vector<double> mean, rstd;
};
RowStats Stats(const std::vector<double>& x, int64_t rows, int64_t cols, bool rms) {
  RowStats s{std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean = rms ? 0.0 : mean / cols;
    for (int64_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
    s.mean[r] = mean;
    s.rstd[r] = 1.0 / std::sqrt(var / cols + kEps);
  }
  return s;
}

std::vector<float> Floats(const std::vector<double>& d) { return ToFloatVector(d); }

// Forward and backward of one norm on (rows, cols), checked against the double reference.
void CheckNorm(bool rms, int64_t rows, int64_t cols) {
  const std::string fwd = rms ? "rms_norm" : "layer_norm";
  const std::string bwd = fwd + "_backward";
  const Shape shape{rows, cols};
  const Tensor gamma = RandomTensor({cols}, DType::kF32, 31, 0.5f, 1.5f);
  const Tensor beta = RandomTensor({cols}, DType::kF32, 32);
  const std::vector<double> g = ToDoubles(gamma), bt = ToDoubles(beta);
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(fwd << " " << CpuIsaName(isa) << " " << dtype << " " << ShapeToString(shape));
      const Tensor x = RandomTensor(shape, dtype, 33, -2.0f, 3.0f);
      const Tensor dy = RandomTensor(shape, dtype, 34);
      const std::vector<double> xv = ToDoubles(x), dyv = ToDoubles(dy);
      const RowStats st = Stats(xv, rows, cols, rms);
      // Forward.
      std::vector<Tensor> outs = {Tensor::Zeros(shape, dtype), Tensor::Zeros({rows}, DType::kF32)};
      std::vector<Tensor> ins = {x, gamma};
      if (!rms) {
        ins.push_back(beta);
        outs.insert(outs.begin() + 1, Tensor::Zeros({rows}, DType::kF32));
      }
      outs = RunKernel(fwd, dtype, ins, outs, ops::NormAttrs{kEps});
      std::vector<double> y(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const double xhat = (xv[r * cols + c] - st.mean[r]) * st.rstd[r];
          y[r * cols + c] = xhat * g[c] + (rms ? 0.0 : bt[c]);
        }
      }
      KILN_REQUIRE_CLOSE(outs[0].ToFloats(), Floats(y), Tolerance(dtype));
      KILN_REQUIRE_CLOSE(outs.back().ToFloats(), Floats(st.rstd), kTolF32);
      if (!rms) KILN_REQUIRE_CLOSE(outs[1].ToFloats(), Floats(st.mean), 1e-5);

      // Backward from the reference statistics (rounded to f32, as the forward stores them).
      const Tensor mean_t = Tensor::FromFloats(Floats(st.mean), {rows});
      const Tensor rstd_t = Tensor::FromFloats(Floats(st.rstd), {rows});
      std::vector<double> dx(rows * cols), dgamma(cols, 0.0), dbeta(cols, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        double sum_g = 0, sum_gx = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double xhat = (xv[r * cols + c] - st.mean[r]) * st.rstd[r];
          const double gg = dyv[r * cols + c] * g[c];
          sum_g += gg;
          sum_gx += gg * xhat;
          dgamma[c] += dyv[r * cols + c] * xhat;
          dbeta[c] += dyv[r * cols + c];
        }
        for (int64_t c = 0; c < cols; ++c) {
          const double xhat = (xv[r * cols + c] - st.mean[r]) * st.rstd[r];
          const double gg = dyv[r * cols + c] * g[c];
          dx[r * cols + c] = st.rstd[r] * (gg - (rms ? 0.0 : sum_g / cols) - xhat * sum_gx / cols);
        }
      }
      std::vector<Tensor> grads[2];
      for (int threads : {1, 2}) {
        ThreadScope ts(threads);
        std::vector<Tensor> bins = {dy, x, gamma};
        std::vector<Tensor> bouts = {Tensor::Zeros(shape, dtype),
                                     Tensor::Zeros({cols}, DType::kF32)};
        if (!rms) {
          bins.push_back(mean_t);
          bouts.push_back(Tensor::Zeros({cols}, DType::kF32));
        }
        bins.push_back(rstd_t);
        grads[threads - 1] = RunKernel(bwd, dtype, bins, bouts, ops::NormAttrs{kEps});
      }
      KILN_REQUIRE_CLOSE(grads[0][0].ToFloats(), Floats(dx), Tolerance(dtype));
      // dgamma sums bf16-rounded normalized values for RMS norm (Note [RMS norm rounding]).
      KILN_REQUIRE_CLOSE(grads[0][1].ToFloats(), Floats(dgamma), Tolerance(dtype));
      if (!rms) KILN_REQUIRE_CLOSE(grads[0][2].ToFloats(), Floats(dbeta), kTolF32);
      for (size_t i = 0; i < grads[0].size(); ++i) REQUIRE(BitEqual(grads[0][i], grads[1][i]));
    }
  }
}

TEST_CASE("layer_norm forward and backward match the reference", "[kernels][norm]") {
  CheckNorm(/*rms=*/false, 37, 72);
  CheckNorm(/*rms=*/false, 301, 72);  // many row blocks
  CheckNorm(/*rms=*/false, 5, 1000);
}

TEST_CASE("rms_norm forward and backward match the reference", "[kernels][norm]") {
  CheckNorm(/*rms=*/true, 37, 72);
  CheckNorm(/*rms=*/true, 301, 72);
  CheckNorm(/*rms=*/true, 5, 1000);
}

TEST_CASE("rms_norm rounds the normalized value to x's dtype before gamma", "[kernels][norm]") {
  // Hugging Face LlamaRMSNorm: weight * (x * rstd).to(bf16), then the output in bf16.
  const int64_t rows = 4, cols = 72;
  const Tensor x = RandomTensor({rows, cols}, DType::kBF16, 35, -2.0f, 2.0f);
  const Tensor gamma = RandomTensor({cols}, DType::kF32, 36, 0.5f, 1.5f);
  const std::vector<Tensor> outs =
      RunKernel("rms_norm", DType::kBF16, {x, gamma},
                {Tensor::Zeros({rows, cols}, DType::kBF16), Tensor::Zeros({rows}, DType::kF32)},
                ops::NormAttrs{kEps});
  const std::vector<float> xv = x.ToFloats(), gv = gamma.ToFloats(), rstd = outs[1].ToFloats();
  std::vector<float> expected(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float normalized = static_cast<float>(BFloat16(xv[r * cols + c] * rstd[r]));
      expected[r * cols + c] = static_cast<float>(BFloat16(normalized * gv[c]));
    }
  }
  REQUIRE(outs[0].ToFloats() == expected);
}

}  // namespace
}  // namespace kiln::testing
