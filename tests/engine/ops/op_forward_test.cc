// Forward values of ops against closed forms and hand-computed references (f32), through RunOp.
#include <cmath>

#include "engine/graph/executor.h"
#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/matmul.h"
#include "engine/ops/attrs/norm.h"
#include "engine/ops/attrs/shape_ops.h"
#include "tests/engine/ops/gradcheck.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

std::vector<Tensor> Run(const std::string& op, std::vector<Tensor> in, std::any attrs = {}) {
  auto out = graph::RunOp(op, in, std::move(attrs));
  INFO(out.status());
  REQUIRE(out.ok());
  return *out;
}

TEST_CASE("forward: matmul matches a hand-computed product", "[forward]") {
  Tensor a = Tensor::FromFloats({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::FromFloats({7, 8, 9, 10, 11, 12}, {3, 2});
  REQUIRE(Run("matmul", {a, b}, ops::MatmulAttrs{})[0].ToFloats() ==
          std::vector<float>{58, 64, 139, 154});
  // a^T (3x2) @ a (2x3)
  REQUIRE(Run("matmul", {a, a}, ops::MatmulAttrs{true, false})[0].ToFloats() ==
          std::vector<float>{17, 22, 27, 22, 29, 36, 27, 36, 45});
}

TEST_CASE("forward: gelu tanh and silu closed forms", "[forward]") {
  std::vector<float> x = {-3.0f, -1.0f, -0.1f, 0.0f, 0.5f, 2.0f, 4.0f};
  Tensor t = Tensor::FromFloats(x, {7});
  const std::vector<float> g = Run("gelu", {t})[0].ToFloats();
  const std::vector<float> s = Run("silu", {t})[0].ToFloats();
  std::vector<float> g_ref, s_ref;
  for (float v : x) {
    const double u = std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v);
    g_ref.push_back(static_cast<float>(0.5 * v * (1.0 + std::tanh(u))));
    s_ref.push_back(static_cast<float>(v / (1.0 + std::exp(-v))));
  }
  KILN_REQUIRE_CLOSE(g, g_ref, 1e-6);
  KILN_REQUIRE_CLOSE(s, s_ref, 1e-6);
}

TEST_CASE("forward: layer_norm output has zero mean and unit variance", "[forward]") {
  Tensor x = RandomTensor({6, 40}, 3, 5.0f);
  Tensor ones = Tensor::Full({40}, 1.0f, DType::kF32), zeros = Tensor::Zeros({40}, DType::kF32);
  const std::vector<Tensor> out = Run("layer_norm", {x, ones, zeros}, ops::NormAttrs{1e-5f});
  const std::vector<float> y = out[0].ToFloats();
  for (int r = 0; r < 6; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < 40; ++c) mean += y[r * 40 + c] / 40.0;
    for (int c = 0; c < 40; ++c) var += (y[r * 40 + c] - mean) * (y[r * 40 + c] - mean) / 40.0;
    REQUIRE(std::fabs(mean) < 1e-5);
    REQUIRE(std::fabs(var - 1.0) < 1e-3);
  }
}

TEST_CASE("forward: cross_entropy of uniform logits is ln V", "[forward]") {
  Tensor logits = Tensor::Zeros({4, 100}, DType::kF32);
  Tensor targets = RandomIds({4}, 100, 1);
  const std::vector<Tensor> out = Run("cross_entropy", {logits, targets}, ops::CrossEntropyAttrs{});
  REQUIRE(std::fabs(out[0].Item() - std::log(100.0f)) < 1e-5);
}

// The reference for the CUDA kernel: exactly cross_entropy, then scale_by on its dlogits.
TEST_CASE("forward: cross_entropy_scaled equals cross_entropy then scale_by", "[forward]") {
  for (DType d : {DType::kF32, DType::kBF16}) {
    for (float factor : {1.0f, 0.3f, 1024.0f}) {
      INFO(DTypeName(d) << " scale " << factor);
      const Tensor logits = RandomTensor({3, 5, 40}, 8, 2.0f, d);
      const Tensor targets = RandomIds({3, 5}, 40, 9);
      const Tensor scale = Tensor::FromFloats({factor}, {1});
      const std::vector<Tensor> fused =
          Run("cross_entropy_scaled", {logits, targets, scale}, ops::CrossEntropyAttrs{});
      const std::vector<Tensor> plain =
          Run("cross_entropy", {logits, targets}, ops::CrossEntropyAttrs{});
      REQUIRE(fused[0].Item() == plain[0].Item());
      REQUIRE(fused[1].ToFloats() == Run("scale_by", {plain[1], scale})[0].ToFloats());
    }
  }
}

TEST_CASE("forward: attention with one key returns that value", "[forward]") {
  // T = 1: softmax over one key is 1, so the output equals v.
  Tensor qkv = RandomTensor({2, 1, 3 * 8}, 4);
  const std::vector<Tensor> out = Run("attention", {qkv}, ops::AttentionAttrs{1, 1, 8, true, 0});
  const std::vector<float> all = qkv.ToFloats(), o = out[0].ToFloats();
  for (int b = 0; b < 2; ++b) {
    for (int d = 0; d < 8; ++d) REQUIRE(std::fabs(o[b * 8 + d] - all[b * 24 + 16 + d]) < 1e-6);
  }
}

TEST_CASE("forward: rope at position 0 is the identity and preserves norms", "[forward]") {
  Tensor qkv = RandomTensor({1, 4, 3 * 8}, 5);
  const std::vector<float> in = qkv.ToFloats();
  const std::vector<float> out =
      Run("rope", {qkv}, ops::RopeAttrs{1, 1, 8, 10000.0f, false})[0].ToFloats();
  for (int d = 0; d < 24; ++d) REQUIRE(std::fabs(out[d] - in[d]) < 1e-6);
  for (int t = 0; t < 4; ++t) {
    double n_in = 0, n_out = 0;
    for (int d = 0; d < 8; ++d) {
      n_in += in[t * 24 + d] * in[t * 24 + d];
      n_out += out[t * 24 + d] * out[t * 24 + d];
    }
    REQUIRE(std::fabs(n_in - n_out) < 1e-4 * std::max(1.0, n_in));
    for (int d = 16; d < 24; ++d) REQUIRE(out[t * 24 + d] == in[t * 24 + d]);  // v untouched
  }
}

TEST_CASE("forward: dropout keeps about 1-p of the elements, scaled", "[forward]") {
  Tensor x = Tensor::Full({100000}, 1.0f, DType::kF32);
  Tensor rng = Tensor::FromVector(std::vector<int64_t>{42, 0}, {2});
  const std::vector<float> y = Run("dropout", {x, rng}, ops::DropoutAttrs{0.25f, 0})[0].ToFloats();
  int kept = 0;
  for (float v : y) {
    REQUIRE((v == 0.0f || std::fabs(v - 1.0f / 0.75f) < 1e-6));
    kept += v != 0.0f;
  }
  REQUIRE(std::fabs(kept / 100000.0 - 0.75) < 0.01);
  // Another step gives another mask; the same step gives the same one.
  Tensor rng2 = Tensor::FromVector(std::vector<int64_t>{42, 1}, {2});
  REQUIRE(Run("dropout", {x, rng2}, ops::DropoutAttrs{0.25f, 0})[0].ToFloats() != y);
  REQUIRE(Run("dropout", {x, rng}, ops::DropoutAttrs{0.25f, 0})[0].ToFloats() == y);
}

TEST_CASE("forward: sum_to, broadcast_scalar, accumulate-free reductions", "[forward]") {
  Tensor x = Tensor::FromFloats({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(Run("sum_to", {x}, ops::SumToAttrs{{3}})[0].ToFloats() == std::vector<float>{5, 7, 9});
  REQUIRE(Run("sum", {x})[0].Item() == 21.0f);
  REQUIRE(Run("mean", {x})[0].Item() == 3.5f);
  Tensor s = Tensor::FromFloats({2.0f}, {1});
  REQUIRE(Run("broadcast_scalar", {s}, ops::BroadcastScalarAttrs{{2, 2}, DType::kF32, 0.5f})[0]
              .ToFloats() == std::vector<float>{1, 1, 1, 1});
}

}  // namespace
}  // namespace kiln::testing

namespace kiln::testing {
namespace {

TEST_CASE("forward: flat_slice is a shaped window sharing its input's memory", "[forward]") {
  Tensor x = Tensor::FromFloats({0, 1, 2, 3, 4, 5, 6, 7}, {2, 4});
  const std::vector<Tensor> out = Run("flat_slice", {x}, ops::FlatSliceAttrs{3, {2, 2}});
  REQUIRE(out[0].sizes() == Shape{2, 2});
  REQUIRE(out[0].ToFloats() == std::vector<float>{3, 4, 5, 6});
  auto bad = graph::RunOp("flat_slice", {x}, ops::FlatSliceAttrs{6, {2, 2}});
  REQUIRE_FALSE(bad.ok());
  REQUIRE(std::string(bad.status().message()).find("outside argument x") != std::string::npos);
}

}  // namespace
}  // namespace kiln::testing

namespace kiln::testing {
namespace {

TEST_CASE("forward: matmul_bias equals matmul then add, f32 and bf16", "[forward]") {
  for (DType d : {DType::kF32, DType::kBF16}) {
    const Tensor a = RandomTensor({2, 5, 24}, 1, 1.0f, d);
    const Tensor w = RandomTensor({40, 24}, 2, 1.0f, d);
    const Tensor bias = RandomTensor({40}, 3, 1.0f, d);
    const std::vector<Tensor> fused =
        Run("matmul_bias", {a, w, bias}, ops::MatmulAttrs{false, true});
    const std::vector<Tensor> product = Run("matmul", {a, w}, ops::MatmulAttrs{false, true});
    const std::vector<Tensor> sum = Run("add", {product[0], bias});
    INFO(DTypeName(d));
    KILN_REQUIRE_CLOSE(fused[0].ToFloats(), sum[0].ToFloats(), d == DType::kF32 ? 1e-6 : 1e-2);
  }
}

// The CPU's fused GELU matmuls are the reference for the CUDA epilogues: exactly the unfused ops.
TEST_CASE("forward: matmul_bias_gelu and matmul_dgelu equal their unfused ops exactly",
          "[forward]") {
  for (DType d : {DType::kF32, DType::kBF16}) {
    INFO(DTypeName(d));
    const Tensor a = RandomTensor({2, 5, 24}, 4, 1.0f, d);
    const Tensor w = RandomTensor({24, 40}, 5, 1.0f, d);
    const Tensor bias = RandomTensor({40}, 6, 1.0f, d);
    const std::vector<Tensor> fused = Run("matmul_bias_gelu", {a, w, bias}, ops::MatmulAttrs{});
    REQUIRE(fused.size() == 2);
    const Tensor pre = Run("matmul_bias", {a, w, bias}, ops::MatmulAttrs{})[0];
    REQUIRE(fused[0].ToFloats() == pre.ToFloats());
    REQUIRE(fused[1].ToFloats() == Run("gelu", {pre})[0].ToFloats());

    const Tensor dout = RandomTensor({2, 5, 24}, 7, 1.0f, d);
    const Tensor dgelu = Run("matmul_dgelu", {dout, w, pre}, ops::MatmulAttrs{false, false})[0];
    const Tensor dy = Run("matmul", {dout, w}, ops::MatmulAttrs{false, false})[0];
    REQUIRE(dgelu.ToFloats() == Run("gelu_backward", {dy, pre})[0].ToFloats());
  }
}

}  // namespace
}  // namespace kiln::testing
