// cross_entropy, embedding and embedding_backward CPU kernels against double-precision references
// on every ISA path: ignored rows, in-place dlogits, large logits, repeated ids, and bit-exact
// thread-count independence of the loss and the embedding gradient.
#include "engine/ops/attrs/loss.h"

#include <cmath>

#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
constexpr int kIgnore = -100;

std::vector<int32_t> RandomIds(int64_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(gen);
  return ids;
}

// loss = mean over counted rows of (logsumexp - logit[target]); dlogits = (softmax - onehot) / n.
void ReferenceCrossEntropy(const std::vector<double>& x, const std::vector<int32_t>& targets,
                           int64_t vocab, double* loss, std::vector<double>* dlogits) {
  const int64_t rows = static_cast<int64_t>(targets.size());
  int64_t counted = 0;
  for (int32_t t : targets) counted += t != kIgnore;
  dlogits->assign(x.size(), 0.0);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == kIgnore) continue;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < vocab; ++j) mx = std::max(mx, x[r * vocab + j]);
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(x[r * vocab + j] - mx);
    total += std::log(sum) + mx - x[r * vocab + targets[r]];
    for (int64_t j = 0; j < vocab; ++j) {
      (*dlogits)[r * vocab + j] = std::exp(x[r * vocab + j] - mx) / sum / counted;
    }
    (*dlogits)[r * vocab + targets[r]] -= 1.0 / counted;
  }
  *loss = total / counted;
}

TEST_CASE("cross_entropy fuses loss and gradient, in place too", "[kernels][loss]") {
  const int64_t rows = 37, vocab = 1000;
  std::vector<int32_t> targets = RandomIds(rows, vocab, 51);
  targets[3] = targets[20] = kIgnore;
  const Tensor t = Tensor::FromVector(targets, {rows});
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      for (float spread : {4.0f, 300.0f}) {  // ordinary and huge logits (stability)
        INFO(CpuIsaName(isa) << " " << dtype << " spread " << spread);
        const Tensor logits = RandomTensor({rows, vocab}, dtype, 52, -spread, spread);
        double ref_loss;
        std::vector<double> ref_grad;
        ReferenceCrossEntropy(ToDoubles(logits), targets, vocab, &ref_loss, &ref_grad);
        std::vector<Tensor> out[2];
        for (int threads : {1, 2}) {
          ThreadScope ts(threads);
          out[threads - 1] =
              RunKernel("cross_entropy", dtype, {logits, t},
                        {Tensor::Zeros({1}, DType::kF32), Tensor::Zeros({rows, vocab}, dtype)},
                        ops::CrossEntropyAttrs{kIgnore});
        }
        KILN_REQUIRE_CLOSE(out[0][0].ToFloats(), std::vector<float>{static_cast<float>(ref_loss)},
                           kTolF32);
        KILN_REQUIRE_CLOSE(out[0][1].ToFloats(), ToFloatVector(ref_grad), Tolerance(dtype));
        REQUIRE(BitEqual(out[0][0], out[1][0]));
        REQUIRE(BitEqual(out[0][1], out[1][1]));
        // In place: dlogits overwrites logits.
        const Tensor in_place = logits.Clone();
        const std::vector<Tensor> aliased =
            RunKernel("cross_entropy", dtype, {in_place, t},
                      {Tensor::Zeros({1}, DType::kF32), in_place}, ops::CrossEntropyAttrs{kIgnore});
        REQUIRE(BitEqual(aliased[0], out[0][0]));
        REQUIRE(BitEqual(in_place, out[0][1]));
      }
    }
  }
}

TEST_CASE("cross_entropy with every row ignored is zero", "[kernels][loss]") {
  const Tensor logits = RandomTensor({3, 17}, DType::kF32, 53);
  const Tensor t = Tensor::FromVector<int32_t>({kIgnore, kIgnore, kIgnore}, {3});
  const std::vector<Tensor> out =
      RunKernel("cross_entropy", DType::kF32, {logits, t},
                {Tensor::Full({1}, 7.0f, DType::kF32), Tensor::Full({3, 17}, 7.0f, DType::kF32)},
                ops::CrossEntropyAttrs{kIgnore});
  REQUIRE(out[0].Item() == 0.0f);
  REQUIRE(out[1].ToFloats() == std::vector<float>(3 * 17, 0.0f));
}

TEST_CASE("embedding copies rows of the table", "[kernels][embedding]") {
  const int64_t vocab = 1000, cols = 72;
  const std::vector<int32_t> ids = RandomIds(5 * 37, vocab, 54);
  const Tensor id_t = Tensor::FromVector(ids, {5, 37});
  for (DType dtype : kFloatTypes) {
    INFO(dtype);
    const Tensor table = RandomTensor({vocab, cols}, dtype, 55);
    const Tensor out = RunKernel("embedding", dtype, {table, id_t},
                                 {Tensor::Zeros({5, 37, cols}, dtype)}, ops::EmbeddingAttrs{})[0];
    const std::vector<float> tv = table.ToFloats(), ov = out.ToFloats();
    int64_t mismatches = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t c = 0; c < cols; ++c) mismatches += ov[i * cols + c] != tv[ids[i] * cols + c];
    }
    REQUIRE(mismatches == 0);
  }
}

TEST_CASE("embedding_backward sums rows per id for any thread count", "[kernels][embedding]") {
  const int64_t vocab = 1000, cols = 200, n = 5 * 37;
  std::vector<int32_t> ids = RandomIds(n, 50, 56);  // many repeats
  ids[0] = vocab - 1;
  const Tensor id_t = Tensor::FromVector(ids, {5, 37});
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor dy = RandomTensor({5, 37, cols}, dtype, 57);
      const std::vector<double> dv = ToDoubles(dy);
      std::vector<double> ref(vocab * cols, 0.0);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < cols; ++c) ref[ids[i] * cols + c] += dv[i * cols + c];
      }
      Tensor out[2];
      for (int threads : {1, 2}) {
        ThreadScope ts(threads);
        out[threads - 1] = RunKernel("embedding_backward", dtype, {dy, id_t},
                                     {Tensor::Full({vocab, cols}, 3.0f, DType::kF32)},
                                     ops::EmbeddingAttrs{vocab})[0];
      }
      KILN_REQUIRE_CLOSE(out[0].ToFloats(), ToFloatVector(ref), kTolF32);
      REQUIRE(BitEqual(out[0], out[1]));
    }
  }
}

}  // namespace
}  // namespace kiln::testing
