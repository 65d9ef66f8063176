// ZeRO 2/3 graph rewriting (zero_pass.h).
#include "engine/dist/zero_pass.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/dist/zero_ops.h"
#include "engine/graph/builder.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/shape_ops.h"

namespace kiln::dist {

using graph::kNoValue;
using graph::NodeId;
using graph::ValueId;

namespace {

// New nodes are built at the end of the node list and then moved next to an anchor node.
struct Placement {
  NodeId anchor;
  bool after;  // false: just before the anchor
};

class Rewriter {
 public:
  Rewriter(graph::Graph& g, std::shared_ptr<ZeroRuntime> rt)
      : g_(g), b_(&g), rt_(std::move(rt)), original_(g.num_nodes()) {}

  absl::Status ReduceGradients();
  absl::Status GatherParameters();
  void Commit();

 private:
  // Nodes created since the last call, placed at `where`.
  void PlaceNew(Placement where) {
    for (NodeId n = placed_upto_; n < g_.num_nodes(); ++n) placement_[n] = where;
    placed_upto_ = g_.num_nodes();
  }
  ZeroOpAttrs Attrs(int bucket) const {
    ZeroOpAttrs a;
    a.runtime = rt_;
    a.bucket = bucket;
    a.dtype = rt_->dtype();
    a.length = rt_->layout().buckets[bucket].length;
    return a;
  }

  graph::Graph& g_;
  graph::GraphBuilder b_;
  std::shared_ptr<ZeroRuntime> rt_;
  const NodeId original_;
  NodeId placed_upto_ = original_;
  std::map<NodeId, Placement> placement_;
  std::vector<bool> removed_ = std::vector<bool>(original_, false);
  int next_gather_ = 0;
};

absl::Status Rewriter::ReduceGradients() {
  const BucketLayout& layout = rt_->layout();
  const int num_buckets = static_cast<int>(layout.buckets.size());
  std::vector<NodeId> last(num_buckets, graph::kNoNode);
  std::vector<std::vector<std::pair<int, ValueId>>> grads(num_buckets);  // (member, g)
  for (NodeId n = 0; n < original_; ++n) {
    const graph::Node& node = g_.node(n);
    if (node.op->name != "accumulate_grad") continue;
    const int p = g_.value(node.outputs[0]).param_index;
    const int bucket = layout.bucket_of[p];
    const auto& members = layout.buckets[bucket].params;
    const int member = static_cast<int>(std::find(members.begin(), members.end(), p) -
                                        members.begin());
    grads[bucket].emplace_back(member, node.inputs[0]);
    last[bucket] = std::max(last[bucket], n);
    removed_[n] = true;
  }
  for (int bucket = 0; bucket < num_buckets; ++bucket) {
    if (grads[bucket].empty()) continue;
    ZeroOpAttrs a = Attrs(bucket);
    std::vector<ValueId> inputs;
    for (const auto& [member, g] : grads[bucket]) {
      a.members.push_back(member);
      inputs.push_back(g);
    }
    b_.Apply("zero_reduce_grads", inputs, a);
    KILN_RETURN_IF_ERROR(b_.status());
    PlaceNew({last[bucket], true});
  }
  for (size_t p = 0; p < g_.params().size(); ++p) g_.SetGrad(static_cast<int>(p), kNoValue);
  return absl::OkStatus();
}

absl::Status Rewriter::GatherParameters() {
  const BucketLayout& layout = rt_->layout();
  for (const bool backward : {false, true}) {
    // First use of every bucket in this phase, and every (node, input) reading a parameter.
    std::map<int, NodeId> first_use;
    std::vector<std::pair<NodeId, int>> reads;
    for (NodeId n = 0; n < original_; ++n) {
      const graph::Node& node = g_.node(n);
      if (removed_[n] || node.backward != backward) continue;
      for (int i = 0; i < static_cast<int>(node.inputs.size()); ++i) {
        const graph::Value& v = g_.value(node.inputs[i]);
        if (v.kind != graph::ValueKind::kParam) continue;
        const int bucket = layout.bucket_of[v.param_index];
        if (!first_use.count(bucket)) first_use[bucket] = n;
        reads.emplace_back(n, i);
      }
    }
    std::vector<std::pair<NodeId, int>> order;  // (first use, bucket)
    for (const auto& [bucket, n] : first_use) order.emplace_back(n, bucket);
    std::sort(order.begin(), order.end());
    // Gathered buffers and parameter views, per bucket.
    std::map<int, ValueId> started;
    std::map<int, int> gather_id;
    std::map<int, ValueId> view_of_param;
    auto start = [&](int bucket) {
      ZeroOpAttrs a = Attrs(bucket);
      a.gather_id = gather_id[bucket] = next_gather_++;
      graph::GraphBuilder::Scope scope(b_, absl::StrCat("zero.bucket", bucket));
      started[bucket] = b_.Apply1("zero_gather_start", {}, a);
    };
    for (size_t i = 0; i < order.size(); ++i) {
      const auto [use, bucket] = order[i];
      if (i == 0) start(bucket);
      ZeroOpAttrs a = Attrs(bucket);
      a.gather_id = gather_id[bucket];
      const ValueId full = b_.Apply1("zero_gather_wait", {started[bucket]}, a);
      for (int p : layout.buckets[bucket].params) {
        const graph::Value& pv = g_.value(g_.params()[p]);
        view_of_param[p] = ops::FlatSlice(b_, full, layout.param_offset[p] -
                                                        layout.buckets[bucket].offset,
                                          pv.type.shape);
      }
      if (i + 1 < order.size()) start(order[i + 1].second);  // prefetch the next bucket
      KILN_RETURN_IF_ERROR(b_.status());
      PlaceNew({use, false});
    }
    for (const auto& [n, i] : reads) {
      graph::Node& node = g_.mutable_node(n);
      node.inputs[i] = view_of_param.at(g_.value(node.inputs[i]).param_index);
    }
  }
  return absl::OkStatus();
}

void Rewriter::Commit() {
  std::vector<NodeId> order;
  std::map<NodeId, std::vector<NodeId>> before, after;
  for (const auto& [n, where] : placement_) (where.after ? after : before)[where.anchor].push_back(n);
  for (NodeId n = 0; n < original_; ++n) {
    for (NodeId x : before[n]) order.push_back(x);
    if (!removed_[n]) order.push_back(n);
    for (NodeId x : after[n]) order.push_back(x);
  }
  g_.SetNodeOrder(order);
}

}  // namespace

absl::Status ApplyZeroPass(graph::Graph& graph, const std::shared_ptr<ZeroRuntime>& runtime) {
  if (runtime->stage() < 2) return absl::OkStatus();
  Rewriter r(graph, runtime);
  KILN_RETURN_IF_ERROR(r.ReduceGradients());
  if (runtime->stage() >= 3) KILN_RETURN_IF_ERROR(r.GatherParameters());
  r.Commit();
  return absl::OkStatus();
}

}  // namespace kiln::dist
