// Liveness analysis and best-fit arena packing (Note [Arena packing]).
#include "engine/graph/memory_planner.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/graph/op_schema.h"

namespace kiln::graph {

const char* RegionName(Region region) {
  switch (region) {
    case Region::kArena: return "arena";
    case Region::kParams: return "params";
    case Region::kGrads: return "grads";
    case Region::kInputs: return "inputs";
    case Region::kConstants: return "constants";
  }
  return "?";
}

namespace {

size_t AlignUp(size_t x, size_t a) { return (x + a - 1) / a * a; }

struct Group {
  size_t bytes = 0;
  int start = 0;  // first node that writes it
  int end = 0;    // last node that reads it
  size_t offset = 0;
};

// Places groups by decreasing size at the best-fitting gap among time-overlapping placed groups.
size_t PackGroups(std::vector<Group>& groups, size_t alignment) {
  std::vector<int> order(groups.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (groups[a].bytes != groups[b].bytes) return groups[a].bytes > groups[b].bytes;
    return groups[a].start < groups[b].start;
  });
  std::vector<int> placed;
  size_t peak = 0;
  std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of overlapping placed groups
  for (int gi : order) {
    Group& g = groups[gi];
    if (g.bytes == 0) continue;
    busy.clear();
    for (int pi : placed) {
      const Group& p = groups[pi];
      if (p.start <= g.end && g.start <= p.end) busy.emplace_back(p.offset, p.offset + p.bytes);
    }
    std::sort(busy.begin(), busy.end());
    size_t best = std::numeric_limits<size_t>::max(), best_gap = best, cursor = 0;
    for (const auto& [lo, hi] : busy) {
      if (lo > cursor && lo - cursor >= g.bytes && lo - cursor < best_gap) {
        best = cursor;
        best_gap = lo - cursor;
      }
      cursor = std::max(cursor, AlignUp(hi, alignment));
    }
    g.offset = best != std::numeric_limits<size_t>::max() ? best : cursor;
    peak = std::max(peak, g.offset + g.bytes);
    placed.push_back(gi);
  }
  return peak;
}

}  // namespace

absl::StatusOr<MemoryPlan> PlanMemory(const Graph& graph,
                                      const std::vector<size_t>& workspace_bytes,
                                      const PlannerOptions& options) {
  const size_t align = options.alignment;
  const int num_values = graph.num_values(), num_nodes = graph.num_nodes();
  MemoryPlan plan;
  plan.values.resize(num_values);
  plan.placed.assign(num_values, false);
  plan.workspace_offset.assign(num_nodes, 0);
  plan.workspace_bytes.assign(num_nodes, 0);

  // Flat regions: parameters (and their gradients at the same offsets), inputs, constants.
  const int num_params = static_cast<int>(graph.params().size());
  plan.param_offset.resize(num_params);
  plan.param_numel.resize(num_params);
  int64_t param_elems = 0;
  plan.param_dtype = num_params > 0 ? graph.value(graph.params()[0]).type.dtype : DType::kF32;
  const size_t param_size = DTypeSize(plan.param_dtype);
  const int64_t elem_align = static_cast<int64_t>(align / param_size);
  for (int p = 0; p < num_params; ++p) {
    const Value& v = graph.value(graph.params()[p]);
    if (v.type.dtype != plan.param_dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter ", v.name, " is ", v.type.ToString(), " but ",
          graph.value(graph.params()[0]).name, " is ",
          std::string(DTypeName(plan.param_dtype)), ": the flat parameter buffer has one dtype"));
    }
    plan.param_offset[p] = options.param_offsets.empty() ? param_elems : options.param_offsets[p];
    plan.param_numel[p] = v.type.numel();
    param_elems += (v.type.numel() + elem_align - 1) / elem_align * elem_align;
    if (!options.param_offsets.empty() &&
        plan.param_offset[p] + v.type.numel() > options.param_elements) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", v.name,
                                                     " does not fit the given layout"));
    }
    plan.values[graph.params()[p]] = {Region::kParams, plan.param_offset[p] * param_size};
    plan.placed[graph.params()[p]] = true;
    const ValueId grad = p < static_cast<int>(graph.grads().size()) ? graph.grads()[p] : kNoValue;
    if (grad != kNoValue) {
      plan.values[grad] = {Region::kGrads, plan.param_offset[p] * param_size};
      plan.placed[grad] = true;
    }
  }
  if (!options.param_offsets.empty()) {
    if (static_cast<int>(options.param_offsets.size()) != num_params) {
      return absl::InvalidArgumentError("the parameter layout has the wrong number of offsets");
    }
    param_elems = options.param_elements;
  }
  plan.param_elements = param_elems;
  plan.params_bytes = static_cast<size_t>(param_elems) * param_size;
  bool any_grad = false;
  for (ValueId gv : graph.grads()) any_grad = any_grad || gv != kNoValue;
  plan.grads_bytes = any_grad ? plan.params_bytes : 0;
  if (options.external_params) {
    plan.params_bytes = 0;
    for (int p = 0; p < num_params; ++p) plan.placed[graph.params()[p]] = false;
    const std::vector<std::vector<NodeId>> readers = graph.Consumers();
    for (int p = 0; p < num_params; ++p) {
      if (!readers[graph.params()[p]].empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", graph.value(graph.params()[p]).name,
            " is read by a node, but parameters are external (a ZeRO-3 gather is missing)"));
      }
    }
  }
  for (ValueId in : graph.inputs()) {
    plan.values[in] = {Region::kInputs, plan.inputs_bytes};
    plan.placed[in] = true;
    plan.inputs_bytes = AlignUp(plan.inputs_bytes + graph.value(in).type.nbytes(), align);
  }
  for (ValueId v = 0; v < num_values; ++v) {
    if (graph.value(v).kind != ValueKind::kConstant) continue;
    plan.values[v] = {Region::kConstants, plan.constants_bytes};
    plan.placed[v] = true;
    plan.constants_bytes = AlignUp(plan.constants_bytes + graph.value(v).type.nbytes(), align);
  }

  // Last reader of every value; graph outputs live to the end.
  std::vector<int> last_use(num_values, -1);
  for (int n = 0; n < num_nodes; ++n) {
    for (ValueId in : graph.node(n).inputs) last_use[in] = n;
  }
  for (ValueId o : graph.outputs()) last_use[o] = num_nodes;

  // Storage groups: views and in-place outputs alias an earlier value's group. A non-arena root
  // (a reshaped parameter) is recorded in `alias_region`.
  std::vector<int> group_of(num_values, -1);
  std::vector<ValueId> view_root(num_values, kNoValue);  // for views of non-arena values
  std::vector<size_t> delta(num_values, 0);  // bytes from the start of the group / view root
  std::vector<Group> groups;
  for (int n = 0; n < num_nodes; ++n) {
    const Node& node = graph.node(n);
    for (int o = 0; o < static_cast<int>(node.outputs.size()); ++o) {
      const ValueId out = node.outputs[o];
      const Value& v = graph.value(out);
      if (v.kind != ValueKind::kActivation) continue;  // gradient slots are already placed
      if (plan.placed[out] || group_of[out] >= 0) {
        return absl::InternalError(absl::StrCat("value ", v.name, " is written twice"));
      }
      int alias_group = -1;
      ValueId alias_value = kNoValue;
      size_t view_bytes = 0;
      if (node.op->is_view && o == 0) {
        alias_value = node.inputs[0];
        if (node.op->view_offset) {
          view_bytes = static_cast<size_t>(node.op->view_offset(node.attrs)) *
                       DTypeSize(v.type.dtype);
        }
      } else if (options.allow_inplace && node.op->inplace_input >= 0 &&
                 node.op->inplace_output == o) {
        const ValueId in = node.inputs[node.op->inplace_input];
        const int gi = group_of[in];
        if (gi >= 0 && groups[gi].end == n && graph.value(in).type.nbytes() == v.type.nbytes()) {
          alias_value = in;
          ++plan.num_inplace;
        }
      }
      if (alias_value != kNoValue) {
        alias_group = group_of[alias_value];
        delta[out] = delta[alias_value] + view_bytes;
        if (alias_group < 0) {  // a view of a parameter, input or constant
          const ValueId root =
              view_root[alias_value] != kNoValue ? view_root[alias_value] : alias_value;
          view_root[out] = root;
          continue;
        }
        group_of[out] = alias_group;
        groups[alias_group].end = std::max(groups[alias_group].end, std::max(last_use[out], n));
        continue;
      }
      Group g;
      g.bytes = AlignUp(v.type.nbytes(), align);
      g.start = n;
      g.end = std::max(last_use[out], n);
      group_of[out] = static_cast<int>(groups.size());
      groups.push_back(g);
      plan.naive_activation_bytes += v.type.nbytes();
    }
    // Reading a view extends its root group's life.
    for (ValueId in : node.inputs) {
      const int gi = group_of[in];
      if (gi >= 0) groups[gi].end = std::max(groups[gi].end, n);
    }
  }
  // Graph outputs keep their group to the end.
  for (ValueId o : graph.outputs()) {
    if (group_of[o] >= 0) groups[group_of[o]].end = num_nodes;
  }
  std::vector<int> workspace_group(num_nodes, -1);
  for (int n = 0; n < num_nodes && n < static_cast<int>(workspace_bytes.size()); ++n) {
    if (workspace_bytes[n] == 0) continue;
    workspace_group[n] = static_cast<int>(groups.size());
    groups.push_back(Group{AlignUp(workspace_bytes[n], align), n, n, 0});
  }

  plan.arena_bytes = PackGroups(groups, align);

  for (ValueId v = 0; v < num_values; ++v) {
    if (group_of[v] >= 0) {
      plan.values[v] = {Region::kArena, groups[group_of[v]].offset + delta[v]};
      plan.placed[v] = true;
    } else if (view_root[v] != kNoValue) {
      plan.values[v] = plan.values[view_root[v]];
      plan.values[v].offset += delta[v];
      plan.placed[v] = true;
    }
  }
  for (int n = 0; n < num_nodes; ++n) {
    if (workspace_group[n] < 0) continue;
    plan.workspace_offset[n] = groups[workspace_group[n]].offset;
    plan.workspace_bytes[n] = workspace_bytes[n];
  }
  return plan;
}

}  // namespace kiln::graph
