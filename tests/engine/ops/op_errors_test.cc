// Bad input never crashes: shape mismatches, wrong dtypes, wrong devices and missing kernels come
// back as a Status naming the op, the argument and the shapes involved.
#include "engine/graph/executor.h"
#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/matmul.h"
#include "engine/ops/attrs/norm.h"
#include "tests/engine/ops/gradcheck.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

std::string ErrorOf(const std::string& op, const std::vector<Tensor>& in, std::any attrs = {}) {
  auto out = graph::RunOp(op, in, std::move(attrs));
  REQUIRE_FALSE(out.ok());
  return std::string(out.status().message());
}

TEST_CASE("shape mismatch names the op, the argument and both shapes", "[errors]") {
  const std::string m =
      ErrorOf("matmul", {RandomTensor({2, 5}, 1), RandomTensor({3, 4}, 2)}, ops::MatmulAttrs{});
  INFO(m);
  REQUIRE(m.find("matmul") != std::string::npos);
  REQUIRE(m.find("argument b") != std::string::npos);
  REQUIRE(m.find("[3, 4]") != std::string::npos);
  REQUIRE(m.find("[2, 5]") != std::string::npos);
  const std::string add = ErrorOf("add", {RandomTensor({2, 5}, 1), RandomTensor({4}, 2)});
  INFO(add);
  REQUIRE(add.find("argument b has shape [4] but a has [2, 5]") != std::string::npos);
}

TEST_CASE("wrong dtypes are refused with the dtype named", "[errors]") {
  const std::string m = ErrorOf("layer_norm",
                                {RandomIds({2, 4}, 3, 1), RandomTensor({4}, 2), RandomTensor({4}, 3)},
                                ops::NormAttrs{});
  INFO(m);
  REQUIRE(m.find("layer_norm") != std::string::npos);
  REQUIRE(m.find("argument x is i32[2, 4]") != std::string::npos);
  const std::string mixed = ErrorOf(
      "matmul", {RandomTensor({2, 4}, 1), RandomTensor({4, 2}, 2, 1.0f, DType::kBF16)},
      ops::MatmulAttrs{});
  INFO(mixed);
  REQUIRE(mixed.find("dtypes must match") != std::string::npos);
  const std::string gamma = ErrorOf(
      "rms_norm", {RandomTensor({2, 4}, 1), RandomTensor({5}, 2)}, ops::NormAttrs{});
  INFO(gamma);
  REQUIRE(gamma.find("argument gamma is f32[5] but x is f32[2, 4]") != std::string::npos);
}

TEST_CASE("tensors on different devices are refused", "[errors]") {
  Tensor cpu = RandomTensor({2, 2}, 1);
  // A tensor that claims to live on cuda:0; RunOp must refuse it before touching its memory.
  static float fake[4];
  Tensor gpu = Tensor::FromStorage(Storage::Wrap(fake, sizeof(fake), Device::CUDA(0)), {2, 2},
                                   DType::kF32);
  const std::string m = ErrorOf("add", {cpu, gpu});
  INFO(m);
  REQUIRE(m.find("argument b is on cuda:0 but a is on cpu") != std::string::npos);
}

TEST_CASE("wrong arity, unknown ops and bad attributes are errors", "[errors]") {
  REQUIRE(ErrorOf("add", {RandomTensor({2}, 1)}).find("expected 2 inputs") != std::string::npos);
  REQUIRE(ErrorOf("no_such_op", {RandomTensor({2}, 1)}).find("unknown op") != std::string::npos);
  const std::string heads = ErrorOf("attention", {RandomTensor({1, 3, 30}, 1)},
                                    ops::AttentionAttrs{3, 2, 5, true, 0});
  INFO(heads);
  REQUIRE(heads.find("n_head a multiple of n_kv_head") != std::string::npos);
  const std::string width = ErrorOf("attention", {RandomTensor({1, 3, 31}, 1)},
                                    ops::AttentionAttrs{2, 2, 5, true, 0});
  INFO(width);
  REQUIRE(width.find("last dimension must be 30") != std::string::npos);
}

}  // namespace
}  // namespace kiln::testing
