// Finite-difference gradient checks for every differentiable op, in f32, through the real
// autodiff + executor path. Tolerance: relative L2 between analytic and central-difference
// gradients <= 2e-3 (f32 round-off with eps = 1e-2 dominates; observed errors are 1e-6..6e-4).
#include <cmath>

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

void Check(GradCheckCase c) {
  const GradCheckResult r = RunGradCheck(c);
  INFO(r.report);
  REQUIRE_FALSE(r.relative_error.empty());
  for (double e : r.relative_error) REQUIRE(e <= c.tolerance);
}

TEST_CASE("gradient: matmul in every transpose and batch form", "[grad]") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      GradCheckCase c;
      c.op = "matmul";
      c.attrs = ops::MatmulAttrs{ta, tb};
      c.inputs = {RandomTensor(ta ? Shape{5, 3} : Shape{3, 5}, 1),
                  RandomTensor(tb ? Shape{4, 5} : Shape{5, 4}, 2)};
      Check(c);
    }
  }
  GradCheckCase shared;  // (B, T, K) @ (K, N): the weight gradient sums over the batch
  shared.op = "matmul";
  shared.attrs = ops::MatmulAttrs{false, true};
  shared.inputs = {RandomTensor({2, 3, 6}, 3), RandomTensor({7, 6}, 4)};
  Check(shared);
  GradCheckCase batched;
  batched.op = "matmul";
  batched.attrs = ops::MatmulAttrs{true, false};
  batched.inputs = {RandomTensor({2, 6, 3}, 5), RandomTensor({2, 6, 4}, 6)};
  Check(batched);
}

TEST_CASE("gradient: add with suffix broadcast, mul, scale", "[grad]") {
  Check({"add", {}, {RandomTensor({3, 4, 5}, 1), RandomTensor({5}, 2)}});
  Check({"add", {}, {RandomTensor({3, 4, 5}, 1), RandomTensor({4, 5}, 2)}});
  Check({"add", {}, {RandomTensor({3, 5}, 1), RandomTensor({3, 5}, 2)}});
  Check({"mul", {}, {RandomTensor({3, 7}, 1), RandomTensor({3, 7}, 2)}});
  Check({"scale", ops::ScaleAttrs{-2.5f}, {RandomTensor({4, 3}, 1)}});
}

TEST_CASE("gradient: activations gelu, silu, swiglu", "[grad]") {
  Check({"gelu", {}, {RandomTensor({5, 9}, 1, 2.0f)}});
  Check({"silu", {}, {RandomTensor({5, 9}, 2, 2.0f)}});
  Check({"swiglu", {}, {RandomTensor({3, 2, 10}, 3, 2.0f)}});
}

TEST_CASE("gradient: reductions sum and mean, reshape", "[grad]") {
  Check({"sum", {}, {RandomTensor({3, 5}, 1)}});
  Check({"mean", {}, {RandomTensor({3, 5}, 1)}});
  Check({"reshape", ops::ReshapeAttrs{{5, -1}}, {RandomTensor({3, 5}, 1)}});
}

TEST_CASE("gradient: layer_norm and rms_norm", "[grad]") {
  GradCheckCase ln{"layer_norm", ops::NormAttrs{1e-5f},
                   {RandomTensor({4, 3, 18}, 1), RandomTensor({18}, 2), RandomTensor({18}, 3)}};
  ln.outputs = {true, false, false};
  Check(ln);
  GradCheckCase rms{"rms_norm", ops::NormAttrs{1e-6f},
                    {RandomTensor({5, 18}, 4), RandomTensor({18}, 5)}};
  rms.outputs = {true, false};
  Check(rms);
}

TEST_CASE("gradient: rope on packed qkv with grouped-query heads", "[grad]") {
  // H = 4, Hkv = 2, D = 6: qkv last dim (4 + 2*2) * 6 = 48
  Check({"rope", ops::RopeAttrs{4, 2, 6, 10000.0f, false}, {RandomTensor({2, 5, 48}, 1)}});
}

TEST_CASE("gradient: causal attention, GQA, odd head dim and length", "[grad]") {
  // H = 6, Hkv = 2, D = 24 (head dim not a power of two), T = 7
  GradCheckCase c{"attention", ops::AttentionAttrs{6, 2, 24, true, 0.0f},
                  {RandomTensor({2, 7, (6 + 4) * 24}, 1)}};
  c.outputs = {true, false};
  Check(c);
  GradCheckCase mha{"attention", ops::AttentionAttrs{2, 2, 8, true, 0.0f},
                    {RandomTensor({1, 19, 48}, 2, 1.5f)}};
  mha.outputs = {true, false};
  Check(mha);
  GradCheckCase full{"attention", ops::AttentionAttrs{2, 1, 8, false, 0.5f},
                     {RandomTensor({2, 5, 32}, 3)}};
  full.outputs = {true, false};
  Check(full);
}

TEST_CASE("gradient: cross_entropy and embedding", "[grad]") {
  GradCheckCase ce{"cross_entropy", ops::CrossEntropyAttrs{},
                   {RandomTensor({2, 3, 37}, 1, 2.0f), RandomIds({2, 3}, 37, 2)}};
  ce.outputs = {true, false};
  Check(ce);
  Tensor targets = RandomIds({6}, 11, 3);
  targets.data<int32_t>()[2] = -100;  // ignored row
  GradCheckCase ignored{"cross_entropy", ops::CrossEntropyAttrs{-100},
                        {RandomTensor({6, 11}, 4, 2.0f), targets}};
  ignored.outputs = {true, false};
  Check(ignored);
  Check({"embedding", {}, {RandomTensor({13, 5}, 5), RandomIds({3, 4}, 13, 6)}});
}

TEST_CASE("gradient: dropout with a fixed rng state", "[grad]") {
  Tensor rng = Tensor::FromVector(std::vector<int64_t>{1234, 7}, {2});
  Check({"dropout", ops::DropoutAttrs{0.3f, 5}, {RandomTensor({4, 33}, 1), rng}});
}

}  // namespace
}  // namespace kiln::testing
