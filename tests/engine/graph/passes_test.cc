// Tests of the graph passes (engine/graph/passes.h) on GPT-2 training graphs: the matmul epilogue
// fusions fold every bias add and every GELU around a linear layer (forward and backward) into the
// matmuls, the loss seed goes into the loss gradient's pass, the graph's producer links stay
// right, and no result changes: on the CPU, where the
// fused kernels run the same bodies in the same order, the fused step's loss and gradients equal
// the unfused step's bit for bit. (The CUDA epilogues are compared with these CPU kernels in
// tests/kernels/cuda/kernel_parity_test.cc.)
#include "engine/graph/passes.h"

#include <cmath>
#include <random>

#include "engine/graph/executor.h"
#include "engine/graph/op_schema.h"
#include "engine/nn/model.h"
#include "engine/ops/attrs/matmul.h"
#include "tests/engine/graph/tiny_gpt2.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

nn::ModelConfig SmallGpt2() { return TinyGpt2Config(4, 32, 64, 16); }

nn::ModelGraph Build(const nn::ModelConfig& c, DType compute, bool fuse) {
  nn::GraphOptions o;
  o.batch = 2;
  o.seq_len = 16;
  o.compute = compute;
  o.fuse_matmul_epilogues = fuse;
  auto m = nn::BuildModel(c, o);
  KILN_CHECK_OK(m.status());
  return std::move(*m);
}

int CountOps(const graph::Graph& g, const std::string& op) {
  int count = 0;
  for (const graph::Node& node : g.nodes()) count += node.op->name == op;
  return count;
}

TEST_CASE(
    "the fusion passes fold GPT-2's bias adds, GELUs and c_fc's bias gradient into its "
    "matmuls, the residual gradient into the norm backwards, and the loss seed into the loss "
    "gradient",
    "[passes]") {
  for (DType compute : {DType::kF32, DType::kBF16}) {
    INFO(DTypeName(compute));
    const nn::ModelGraph m = Build(SmallGpt2(), compute, true);
    const graph::Graph& g = m.graph;
    // c_attn, attn c_proj and mlp c_proj keep a bias epilogue; c_fc takes the GELU too.
    REQUIRE(CountOps(g, "matmul_bias") == 3 * 4);
    REQUIRE(CountOps(g, "matmul_bias_gelu") == 4);
    // d(c_proj input) * gelu'(pre), with c_fc's bias gradient (its column sums) as output 1.
    REQUIRE(CountOps(g, "matmul_dgelu_bgrad") == 4);
    REQUIRE(CountOps(g, "matmul_dgelu") == 0);
    int sums_of_dpre = 0;
    for (const graph::Node& node : g.nodes()) {
      if (node.op->name != "sum_to") continue;
      const graph::Value& in = g.value(node.inputs[0]);
      sums_of_dpre +=
          in.producer != graph::kNoNode && g.node(in.producer).op->name == "matmul_dgelu_bgrad";
    }
    REQUIRE(sums_of_dpre == 0);
    // c_attn, attn c_proj and mlp c_proj: the bias gradient comes with the weight gradient.
    REQUIRE(CountOps(g, "matmul_bgrad") == 3 * 4);
    // The one sum_to left sums the position embedding's gradient over the batch: no bias.
    REQUIRE(CountOps(g, "sum_to") == 1);
    // Both norms of every block feed the residual stream: their dx and the stream's gradient are
    // summed by the norm backward. ln_f's input has no other reader, so its backward stays plain.
    REQUIRE(CountOps(g, "layer_norm_backward_add") == 2 * 4);
    REQUIRE(CountOps(g, "layer_norm_backward") == 1);
    REQUIRE(CountOps(g, "gelu") == 0);
    REQUIRE(CountOps(g, "gelu_backward") == 0);
    REQUIRE(CountOps(g, "cross_entropy_scaled") == 1);  // the loss seed folded into dlogits
    REQUIRE(CountOps(g, "cross_entropy") == 0);
    REQUIRE(CountOps(g, "scale_by") == 0);
    int adds_after_matmul = 0;
    for (const graph::Node& node : g.nodes()) {
      if (node.op->name != "add") continue;
      const graph::Value& in = g.value(node.inputs[0]);
      adds_after_matmul += in.producer != graph::kNoNode &&
                           g.node(in.producer).op->name == "matmul" &&
                           g.value(node.inputs[1]).type.rank() == 1;
    }
    REQUIRE(adds_after_matmul == 0);
    // Every output names its producer and its position there (the GELU's output moved to output 1
    // of the fused matmul).
    for (graph::NodeId n = 0; n < g.num_nodes(); ++n) {
      const graph::Node& node = g.node(n);
      for (size_t o = 0; o < node.outputs.size(); ++o) {
        REQUIRE(g.value(node.outputs[o]).producer == n);
        REQUIRE(g.value(node.outputs[o]).producer_output == static_cast<int>(o));
      }
    }
  }
}

TEST_CASE("a GELU whose product has another reader keeps its backward unfused", "[passes]") {
  // gelu_backward(dy, pre) folds into dy's matmul only when that matmul's product is read there
  // alone; the forward GELU keeps pre as an output, so pre's other readers are unaffected.
  graph::Graph g;
  graph::GraphBuilder b(&g);
  using graph::ValueId;
  const ValueId x = b.Input("x", {{4, 8}, DType::kF32});
  const ValueId w = b.Param("w", {{8, 16}, DType::kF32});
  const ValueId bias = b.Param("bias", {{16}, DType::kF32});
  const ValueId pre = b.Apply1("matmul_bias", {x, w, bias}, ops::MatmulAttrs{});
  const ValueId y = b.Apply1("gelu", {pre});
  const ValueId dy = b.Apply1("matmul", {x, w}, ops::MatmulAttrs{});
  const ValueId dpre = b.Apply1("gelu_backward", {dy, pre});
  const ValueId other = b.Apply1("add", {dy, pre});  // a second reader of dy
  REQUIRE(b.status().ok());
  for (ValueId v : {y, dpre, other}) g.MarkOutput(v);
  REQUIRE(graph::FuseMatmulGelu(g) == 1);
  REQUIRE(CountOps(g, "matmul_bias_gelu") == 1);
  REQUIRE(CountOps(g, "gelu_backward") == 1);
  REQUIRE(CountOps(g, "matmul_dgelu") == 0);
  const graph::Value& yv = g.value(y);
  REQUIRE(g.node(yv.producer).op->name == "matmul_bias_gelu");
  REQUIRE(yv.producer_output == 1);
  REQUIRE(g.value(pre).producer == yv.producer);
  REQUIRE(g.value(pre).producer_output == 0);
}

// One CPU step from fixed weights and tokens: (loss, gradients).
std::pair<float, std::vector<float>> Step(const nn::ModelGraph& m, const std::vector<float>& w) {
  auto exec = graph::Executor::Create(m.graph, graph::ExecutorOptions{});
  KILN_CHECK_OK(exec.status());
  graph::Executor& e = **exec;
  REQUIRE(e.memory_plan().param_elements == static_cast<int64_t>(w.size()));
  e.flat_params().CopyFrom(Tensor::FromFloats(w, {static_cast<int64_t>(w.size())}));
  const auto tokens = [](uint32_t seed) {
    std::vector<int32_t> ids;
    for (uint32_t t : RandomTokens(32, 64, seed)) ids.push_back(static_cast<int32_t>(t));
    return Tensor::FromVector(ids, {2, 16});
  };
  e.value(m.inputs).CopyFrom(tokens(5));
  e.value(m.targets).CopyFrom(tokens(6));
  e.value(m.backward.loss_seed).Fill(0.75f);  // a seed other than 1: it scales every gradient
  e.ZeroGrads();
  e.Run();
  return {e.value(m.loss).Item(), e.flat_grads().ToFloats()};
}

// In f32 the fused step equals the unfused one bit for bit. In bf16 the bias epilogue adds the bias
// before the product is rounded (once, not twice), so there the GELU and bias-gradient fusions
// are checked bit for bit against the graph with only the biases fused, and the fully unfused step
// is close.
TEST_CASE("fusing the matmul epilogues changes no loss or gradient bit on the CPU", "[passes]") {
  for (DType compute : {DType::kF32, DType::kBF16}) {
    INFO(DTypeName(compute));
    const nn::ModelGraph fused = Build(SmallGpt2(), compute, true);
    const nn::ModelGraph plain = Build(SmallGpt2(), compute, false);
    nn::ModelGraph bias_only = Build(SmallGpt2(), compute, false);
    REQUIRE(graph::FuseMatmulBias(bias_only.graph) == 4 * 4);
    REQUIRE(CountOps(plain.graph, "gelu") == 4);
    REQUIRE(CountOps(bias_only.graph, "gelu") == 4);
    std::vector<float> w(static_cast<size_t>(
        graph::Executor::Create(plain.graph, {}).value()->memory_plan().param_elements));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.2f);
    for (float& v : w) v = normal(rng);
    const auto [fused_loss, fused_grads] = Step(fused, w);
    const auto [bias_loss, bias_grads] = Step(bias_only, w);
    const auto [plain_loss, plain_grads] = Step(plain, w);
    REQUIRE(std::isfinite(fused_loss));
    REQUIRE(fused_loss == bias_loss);
    REQUIRE(fused_grads == bias_grads);
    if (compute == DType::kF32) {
      REQUIRE(fused_loss == plain_loss);
      REQUIRE(fused_grads == plain_grads);
    } else {
      REQUIRE(std::abs(fused_loss - plain_loss) < 1e-2 * std::abs(plain_loss));
      KILN_REQUIRE_CLOSE(fused_grads, plain_grads, 2e-2);
    }
  }
}

}  // namespace
}  // namespace kiln::testing
