// Tests of the memory planner on a GPT-2 training graph: every pair of values that are live at the
// same time occupies disjoint arena bytes unless one aliases the other (a view or an in-place
// output), and the planned peak is far below the naive sum of all activation sizes.
#include "engine/graph/memory_planner.h"

#include <map>
#include <numeric>

#include "engine/graph/op_schema.h"
#include "engine/nn/model.h"
#include "tests/testing.h"

namespace kiln::graph {
namespace {

// A GPT-2 training graph: by default a small one (L4, D256, T256, B8); `gpt2_124m` gives the
// benchmark's model (L12, D768, vocab 50304, T1024, B8).
nn::ModelGraph BuildGpt2(DType compute, bool gpt2_124m = false) {
  nn::ModelConfig c;
  c.family = "gpt2";
  c.n_layer = gpt2_124m ? 12 : 4;
  c.n_head = gpt2_124m ? 12 : 4;
  c.n_kv_head = c.n_head;
  c.d_model = gpt2_124m ? 768 : 256;
  c.d_ff = 4 * c.d_model;
  c.vocab_size = gpt2_124m ? 50304 : 4096;
  c.max_seq_len = gpt2_124m ? 1024 : 256;
  nn::GraphOptions o;
  o.batch = 8;
  o.seq_len = c.max_seq_len;
  o.compute = compute;
  auto m = nn::BuildModel(c, o);
  KILN_CHECK_OK(m.status());
  return std::move(*m);
}

// Union-find over values whose storage is shared on purpose.
struct Aliases {
  std::vector<int> parent;
  explicit Aliases(int n) : parent(n) { std::iota(parent.begin(), parent.end(), 0); }
  int Find(int x) { return parent[x] == x ? x : parent[x] = Find(parent[x]); }
  void Join(int a, int b) { parent[Find(a)] = Find(b); }
};

// The most bytes live at any one node, counting each aliased group once: no packing can do better.
size_t LiveBytesLowerBound(const Graph& g, const MemoryPlan& plan, const std::vector<size_t>& ws);

void CheckNoOverlap(const Graph& g, const MemoryPlan& plan) {
  const int nv = g.num_values(), nn = g.num_nodes();
  std::vector<int> def(nv, -1), last(nv, -1);
  Aliases aliases(nv);
  for (int n = 0; n < nn; ++n) {
    const Node& node = g.node(n);
    for (ValueId in : node.inputs) last[in] = n;
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      const ValueId out = node.outputs[o];
      def[out] = n;
      const bool view = node.op->is_view && o == 0;
      const bool inplace =
          node.op->inplace_input >= 0 && node.op->inplace_output == static_cast<int>(o);
      if (view || inplace) {
        const ValueId in = node.inputs[view ? 0 : node.op->inplace_input];
        if (plan.values[in].region == plan.values[out].region &&
            plan.values[in].offset == plan.values[out].offset) {
          aliases.Join(in, out);
        }
      }
    }
  }
  for (ValueId o : g.outputs()) last[o] = nn;
  // An aliased group's members must not be read after another member is written in place.
  std::vector<int> group_last(nv, -1);
  for (int v = 0; v < nv; ++v)
    group_last[aliases.Find(v)] = std::max(group_last[aliases.Find(v)], last[v]);
  int checked_pairs = 0;
  for (int a = 0; a < nv; ++a) {
    if (def[a] < 0 || !plan.placed[a] || plan.values[a].region != Region::kArena) continue;
    const int a_end = std::max(last[a], def[a]);
    const size_t a_lo = plan.values[a].offset, a_hi = a_lo + g.value(a).type.nbytes();
    for (int b = a + 1; b < nv; ++b) {
      if (def[b] < 0 || !plan.placed[b] || plan.values[b].region != Region::kArena) continue;
      const int b_end = std::max(last[b], def[b]);
      if (def[a] > b_end || def[b] > a_end) continue;  // never live together
      const size_t b_lo = plan.values[b].offset, b_hi = b_lo + g.value(b).type.nbytes();
      if (a_hi <= b_lo || b_hi <= a_lo) continue;
      ++checked_pairs;
      INFO("values " << g.value(a).name << " and " << g.value(b).name << " overlap");
      REQUIRE(aliases.Find(a) == aliases.Find(b));
    }
  }
  // In-place outputs: the input they overwrite is never read after the writing node.
  for (int n = 0; n < nn; ++n) {
    const Node& node = g.node(n);
    if (node.op->inplace_input < 0) continue;
    const ValueId in = node.inputs[node.op->inplace_input];
    const ValueId out = node.outputs[node.op->inplace_output];
    if (aliases.Find(in) != aliases.Find(out) || node.op->is_view) continue;
    REQUIRE(last[in] <= n);
  }
  (void)checked_pairs;
}

size_t LiveBytesLowerBound(const Graph& g, const MemoryPlan& plan, const std::vector<size_t>& ws) {
  const int nv = g.num_values(), nn = g.num_nodes();
  std::vector<int> def(nv, -1), last(nv, -1);
  for (int n = 0; n < nn; ++n) {
    for (ValueId in : g.node(n).inputs) last[in] = n;
    for (ValueId out : g.node(n).outputs) def[out] = n;
  }
  for (ValueId o : g.outputs()) last[o] = nn;
  // Values sharing an arena offset and overlapping in time are one buffer.
  size_t best = 0;
  for (int n = 0; n < nn; ++n) {
    std::map<size_t, size_t> live;  // offset -> bytes
    for (int v = 0; v < nv; ++v) {
      if (def[v] < 0 || !plan.placed[v] || plan.values[v].region != Region::kArena) continue;
      if (def[v] <= n && n <= std::max(def[v], last[v])) {
        size_t& bytes = live[plan.values[v].offset];
        bytes = std::max(bytes, g.value(v).type.nbytes());
      }
    }
    size_t total = n < static_cast<int>(ws.size()) ? ws[n] : 0;
    for (const auto& [offset, bytes] : live) total += bytes;
    best = std::max(best, total);
  }
  return best;
}

TEST_CASE("planner packs a GPT-2 training graph well below the naive sum", "[planner]") {
  for (DType compute : {DType::kF32, DType::kBF16}) {
    nn::ModelGraph m = BuildGpt2(compute);
    std::vector<size_t> workspace(m.graph.num_nodes(), 0);
    for (int n = 0; n < m.graph.num_nodes(); n += 7) workspace[n] = 1 << 16;
    auto plan = PlanMemory(m.graph, workspace);
    REQUIRE(plan.ok());
    INFO("compute " << DTypeName(compute) << ": planned arena " << plan->arena_bytes / 1e6
                    << " MB vs naive " << plan->naive_activation_bytes / 1e6 << " MB, "
                    << plan->num_inplace << " in-place");
    WARN("GPT-2 L4 D256 T256 B8 " << DTypeName(compute) << ": planned peak "
                                  << plan->arena_bytes / 1e6 << " MB, naive sum "
                                  << plan->naive_activation_bytes / 1e6 << " MB");
    const size_t bound = LiveBytesLowerBound(m.graph, *plan, workspace);
    INFO("lower bound (most bytes live at one node) " << bound / 1e6 << " MB");
    REQUIRE(plan->arena_bytes < plan->naive_activation_bytes * 0.6);
    REQUIRE(plan->arena_bytes <= bound * 1.1);
    REQUIRE(plan->num_inplace > 0);
    CheckNoOverlap(m.graph, *plan);
    // Gradients sit at their parameter's offset in the gradient buffer.
    for (size_t p = 0; p < m.graph.params().size(); ++p) {
      const ValueId grad = m.graph.grads()[p];
      REQUIRE(grad != kNoValue);
      REQUIRE(plan->values[grad].region == Region::kGrads);
      REQUIRE(plan->values[grad].offset == plan->values[m.graph.params()[p]].offset);
    }
  }
}

TEST_CASE("planner without in-place still never overlaps live values", "[planner]") {
  nn::ModelGraph m = BuildGpt2(DType::kF32);
  PlannerOptions options;
  options.allow_inplace = false;
  auto plan = PlanMemory(m.graph, {}, options);
  REQUIRE(plan.ok());
  REQUIRE(plan->num_inplace == 0);
  CheckNoOverlap(m.graph, *plan);
}

}  // namespace
}  // namespace kiln::graph

namespace kiln::graph {
namespace {

// Note [cuBLASLt workspace size] (kernels/cuda/matmul.cc) relies on this: a workspace is live for
// its node alone, so the planner packs every node's workspace into the same arena bytes rather
// than adding them up. On GPT-2 124M's training graph at the benchmark's size (bf16,
// B = 8, T = 1024), giving every matmul node a 32 MiB cuBLASLt workspace costs the arena at most
// about one workspace, not one per node.
TEST_CASE("large matmul workspaces cost the arena about one workspace, not one per node",
          "[planner]") {
  const nn::ModelGraph gpt2 = BuildGpt2(DType::kBF16, /*gpt2_124m=*/true);
  const Graph& graph = gpt2.graph;
  const size_t ws_bytes = (size_t{32} << 20) + 256;  // kCublasWorkspace + alignment slack
  std::vector<size_t> workspace(graph.num_nodes(), 0);
  int matmuls = 0;
  for (int n = 0; n < graph.num_nodes(); ++n) {
    const std::string& op = graph.node(n).op->name;
    if (op.rfind("matmul", 0) == 0) {  // matmul and its fused forms
      workspace[n] = ws_bytes;
      ++matmuls;
    }
  }
  auto without = PlanMemory(graph, {});
  auto with = PlanMemory(graph, workspace);
  REQUIRE(without.ok());
  REQUIRE(with.ok());
  WARN("GPT-2 124M bf16 B8 T1024: arena " << without->arena_bytes / 1048576.0 << " MiB, with a "
                                          << ws_bytes / 1048576.0 << " MiB workspace on each of "
                                          << matmuls << " matmuls " << with->arena_bytes / 1048576.0
                                          << " MiB");
  REQUIRE(matmuls > 50);
  REQUIRE(with->arena_bytes <= without->arena_bytes + ws_bytes + ws_bytes / 8);
  CheckNoOverlap(graph, *with);
}

}  // namespace
}  // namespace kiln::graph
