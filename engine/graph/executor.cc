// Executor binding (plan -> buffers -> kernels) and the run loop.
#include "engine/graph/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/allocator.h"
#include "engine/core/device_runtime.h"
#include "engine/graph/builder.h"
#include "engine/graph/op_schema.h"

namespace kiln::graph {

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(Graph graph,
                                                           const ExecutorOptions& options) {
  std::unique_ptr<Executor> e(new Executor(std::move(graph), options));
  KILN_RETURN_IF_ERROR(e->Bind());
  return e;
}

namespace {

std::string DTypeList(const std::vector<DType>& dtypes) {
  std::vector<std::string> names;
  for (DType d : dtypes) names.emplace_back(DTypeName(d));
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

Storage AllocateRegion(size_t bytes, Device device) {
  return Storage::Allocate(std::max<size_t>(bytes, 64), device);
}

}  // namespace

absl::Status Executor::Bind() {
  const Device device = options_.device;
  if (GetAllocator(device) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("no allocator for device ", device.ToString(), " (is its backend linked?)"));
  }
  // Kernels first: their workspace sizes feed the planner.
  const int num_nodes = graph_.num_nodes();
  nodes_.resize(num_nodes);
  for (int n = 0; n < num_nodes; ++n) {
    const Node& node = graph_.node(n);
    if (node.op->is_view) continue;
    // Ops without inputs (a collective that fills a buffer) dispatch on their output.
    const DType dtype = node.inputs.empty()
                            ? graph_.value(node.outputs.at(0)).type.dtype
                            : graph_.value(node.inputs.at(node.op->dispatch_input)).type.dtype;
    KernelFactory factory = KernelRegistry::Global().Find(node.op->name, device.type, dtype);
    if (factory == nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "no kernel for op ", node.op->name, " (node ", node.name, ") on ", device.ToString(),
          " with dtype ", std::string(DTypeName(dtype)), "; registered dtypes: ",
          DTypeList(KernelRegistry::Global().DTypesFor(node.op->name, device.type))));
    }
    nodes_[n].kernel = factory();
  }
  // Workspace sizes need shapes only: ask each kernel with unbound (undefined data) tensors.
  std::vector<size_t> workspace(num_nodes, 0);
  auto make_ctx = [&](BoundNode& bn, const Node& node) {
    bn.ctx.inputs = bn.inputs.data();
    bn.ctx.num_inputs = static_cast<int>(bn.inputs.size());
    bn.ctx.outputs = bn.outputs.data();
    bn.ctx.num_outputs = static_cast<int>(bn.outputs.size());
    bn.ctx.attrs = &node.attrs;
  };
  // Shape-only tensors over a zero-byte-backed storage are not allowed; instead bind after planning
  // with a provisional plan that has no workspaces, query sizes, then re-plan. Both plans differ
  // only in workspace groups, so values keep their shapes.
  KILN_ASSIGN_OR_RETURN(plan_, PlanMemory(graph_, {}, options_.planner));
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      // Note [One arena at a time]: every view of the provisional arena goes first, so it is freed
      // before the final one is allocated. Holding both made the peak the sum of two arenas
      // (GPT-2 124M at B 8, T 1024 on an H200: 6920 MiB allocated at the peak for ~5.3 GB of
      // plan), and on the CPU both were zero-filled, so resident too. A caching allocator would
      // keep the freed arena reserved (the final one is larger, so it cannot reuse it): it goes
      // back to the driver here, once per executor.
      values_.clear();
      for (BoundNode& bn : nodes_) {
        bn.inputs.clear();
        bn.outputs.clear();
      }
      arena_ = Storage();
      GetAllocator(device)->ReleaseCache();
    }
    arena_ = AllocateRegion(plan_.arena_bytes, device);
    if (pass == 0) {
      if (options_.shared_params.defined()) {
        if (options_.shared_params.nbytes() < plan_.params_bytes ||
            options_.shared_params.device() != device) {
          return absl::InvalidArgumentError(
              absl::StrCat("shared parameter storage holds ", options_.shared_params.nbytes(),
                           " bytes on ", options_.shared_params.device().ToString(),
                           "; this graph needs ", plan_.params_bytes, " on ", device.ToString()));
        }
        params_ = options_.shared_params;
      } else {
        params_ = AllocateRegion(plan_.params_bytes, device);
      }
      grads_ = AllocateRegion(plan_.grads_bytes, device);
      inputs_ = AllocateRegion(plan_.inputs_bytes, device);
      constants_ = AllocateRegion(plan_.constants_bytes, device);
    }
    values_.assign(graph_.num_values(), Tensor());
    for (ValueId v = 0; v < graph_.num_values(); ++v) {
      if (!plan_.placed[v]) continue;
      const Value& val = graph_.value(v);
      const Placement& p = plan_.values[v];
      const Storage* region = nullptr;
      switch (p.region) {
        case Region::kArena:
          region = &arena_;
          break;
        case Region::kParams:
          region = &params_;
          break;
        case Region::kGrads:
          region = &grads_;
          break;
        case Region::kInputs:
          region = &inputs_;
          break;
        case Region::kConstants:
          region = &constants_;
          break;
      }
      const size_t elem = DTypeSize(val.type.dtype);
      KILN_CHECK_EQ(p.offset % elem, 0u) << val.name;
      values_[v] = Tensor::FromStorage(*region, val.type.shape, val.type.dtype,
                                       static_cast<int64_t>(p.offset / elem));
    }
    for (int n = 0; n < num_nodes; ++n) {
      const Node& node = graph_.node(n);
      BoundNode& bn = nodes_[n];
      bn.inputs.clear();
      bn.outputs.clear();
      for (ValueId in : node.inputs) bn.inputs.push_back(values_[in]);
      for (ValueId out : node.outputs) bn.outputs.push_back(values_[out]);
      make_ctx(bn, node);
      if (pass == 0 && bn.kernel) workspace[n] = bn.kernel->WorkspaceBytes(bn.ctx);
    }
    if (pass == 0) {
      KILN_ASSIGN_OR_RETURN(plan_, PlanMemory(graph_, workspace, options_.planner));
    }
  }
  for (ValueId v = 0; v < graph_.num_values(); ++v) {
    const Value& val = graph_.value(v);
    if (val.kind == ValueKind::kConstant && plan_.placed[v]) values_[v].CopyFrom(val.constant);
  }
  if (plan_.params_bytes > 0) {
    flat_params_ = Tensor::FromStorage(params_, {plan_.param_elements}, plan_.param_dtype);
  }
  if (plan_.grads_bytes > 0) {
    flat_grads_ = Tensor::FromStorage(grads_, {plan_.param_elements}, plan_.param_dtype);
  }
  for (int n = 0; n < num_nodes; ++n) {
    BoundNode& bn = nodes_[n];
    if (!bn.kernel) continue;
    if (plan_.workspace_bytes[n] > 0) {
      bn.ctx.workspace = static_cast<char*>(arena_.data()) + plan_.workspace_offset[n];
      bn.ctx.workspace_bytes = plan_.workspace_bytes[n];
    }
    const Node& node = graph_.node(n);
    const absl::Status prepared = bn.kernel->Prepare(bn.ctx);
    if (!prepared.ok()) {
      return absl::Status(prepared.code(), absl::StrCat("preparing op ", node.op->name, " (node ",
                                                        node.name, "): ", prepared.message()));
    }
    if (node.op->name == "accumulate_grad") {
      bn.grad_ready_param = graph_.value(node.outputs[0]).param_index;
    }
  }
  node_seconds_.assign(num_nodes, 0.0);
  return absl::OkStatus();
}

Executor::~Executor() {
  for (const Segment& s : segments_) {
    if (s.graph != nullptr) RuntimeFor(options_.device).DestroyGraph(options_.device, s.graph);
  }
}

bool Executor::GraphsApply() const {
  static const bool disabled = [] {
    const char* env = std::getenv("KILN_CUDA_GRAPHS");
    return env != nullptr && std::string(env) == "0";
  }();
  return options_.device_graphs && !options_.device.is_cpu() && !options_.profile &&
         graph_refusal_.empty() && !disabled;
}

void Executor::SetGradReadyCallback(std::function<void(int param_index)> callback,
                                    const std::vector<std::vector<int>>& overlap_groups) {
  grad_ready_ = std::move(callback);
  // The node that finishes each parameter's gradient, then the last of every group's.
  std::vector<int> finishing_node(graph_.params().size(), -1);
  for (int n = 0; n < static_cast<int>(nodes_.size()); ++n) {
    if (nodes_[n].grad_ready_param >= 0) finishing_node[nodes_[n].grad_ready_param] = n;
  }
  segment_break_.assign(nodes_.size(), false);
  for (const std::vector<int>& group : overlap_groups) {
    int last = -1;
    for (int p : group) last = std::max(last, finishing_node.at(p));
    if (last >= 0) segment_break_[last] = true;
  }
  DestroyGraphs();  // recorded with other segment boundaries
}

// Note [Graph segments]
// A step is recorded as a sequence of graphs (Note [Device graphs]) rather than one, because some
// of its work cannot be recorded and some must not wait for the end of the step:
// - host work: a node whose kernel talks to a communicator each run (ZeRO's zero_* ops) runs
//   directly, on its own, between the graphs before and after it;
// - overlap points: data parallelism starts a bucket's reduction from the grad-ready callback as
//   soon as its last gradient is final. A callback cannot run inside a recording (nothing has run
//   yet, and its collective would be recorded into the graph), so the segment ends after the node
//   that completes one of the caller's overlap groups; after launching a segment the executor
//   calls the callbacks of the gradients it finished, in node order. Each collective is issued
//   after the launch of the graph that computes its input, so it follows that work on the device
//   (Note [Issue order on a device]) and runs while the next segments compute.
// Callbacks of parameters that end no group simply run after their segment's launch. A segment
// with no kernel (views only) is not recorded. The recording run records the segments one after
// the other, launching each once recorded, so host work and callbacks keep their places; a
// segment that fails to record ends graphs for this executor: that segment and the rest of the run
// go directly, as does every later run. Without a callback and host work there is one segment: the
// whole step.
std::vector<Executor::Segment> Executor::PlanSegments() const {
  const int count = static_cast<int>(nodes_.size());
  std::vector<Segment> segments;
  int start = 0;
  const auto close = [&](int end) {
    bool any_kernel = false;
    for (int n = start; n < end; ++n) any_kernel = any_kernel || nodes_[n].kernel != nullptr;
    if (end > start) segments.push_back(Segment{start, end, any_kernel});
    start = end;
  };
  for (int n = 0; n < count; ++n) {
    if (!nodes_[n].kernel) continue;
    if (graph_.node(n).op->host_work) {
      close(n);
      segments.push_back(Segment{n, n + 1, /*recorded=*/false});
      start = n + 1;
    } else if (!segment_break_.empty() && segment_break_[n]) {
      close(n + 1);
    }
  }
  close(count);
  return segments;
}

void Executor::Run() {
  const int n = static_cast<int>(nodes_.size());
  if (!GraphsApply()) {
    RunNodes(0, n);
    return;
  }
  if (!recorded_) {
    // The first run sets up what kernels create lazily (library handles, heuristics, attributes)
    // outside any recording; the second is recorded, segment by segment, and launched.
    if (plain_runs_++ == 0) {
      RunNodes(0, n);
    } else {
      RecordSegments();
    }
    return;
  }
  DeviceRuntime& runtime = RuntimeFor(options_.device);
  for (const Segment& s : segments_) {
    if (s.graph != nullptr) {
      runtime.LaunchGraph(options_.device, s.graph);
      NotifyGradReady(s.begin, s.end);
    } else {
      RunNodes(s.begin, s.end);
    }
  }
  ++graph_launches_;
}

void Executor::RecordSegments() {
  DeviceRuntime& runtime = RuntimeFor(options_.device);
  Allocator* allocator = GetAllocator(options_.device);
  const auto allocations = [&] { return allocator != nullptr ? allocator->Stats().num_allocs : 0; };
  std::vector<Segment> segments = PlanSegments();
  for (size_t i = 0; i < segments.size(); ++i) {
    Segment& s = segments[i];
    if (!s.recorded) {
      RunNodes(s.begin, s.end);
      continue;
    }
    std::string why;
    GraphHandle recorded = nullptr;
    if (!runtime.BeginCapture(options_.device)) {
      why = "the device runtime cannot record graphs";
    } else {
      const int64_t allocs_before = allocations();
      RunKernels(s.begin, s.end);  // recorded, not run; the callbacks wait for the launch
      recorded = runtime.EndCapture(options_.device, &why);
      // A block handed out while recording (from a cache: no CUDA call to refuse it) would be
      // freed and reused while the graph still names it: such a graph is not replayed.
      if (recorded != nullptr && allocations() != allocs_before) {
        runtime.DestroyGraph(options_.device, recorded);
        recorded = nullptr;
        why = "a kernel allocated device memory while the step was recorded";
      }
    }
    if (recorded == nullptr) {
      graph_refusal_ = why;
      std::fprintf(stderr, "kiln: running without device graphs: %s\n", why.c_str());
      segments_ = std::move(segments);
      DestroyGraphs();
      RunNodes(s.begin, static_cast<int>(nodes_.size()));  // none of this segment's work ran
      return;
    }
    s.graph = recorded;
    runtime.LaunchGraph(options_.device, recorded);
    NotifyGradReady(s.begin, s.end);
  }
  segments_ = std::move(segments);
  recorded_ = true;
  ++graph_launches_;
}

void Executor::DestroyGraphs() {
  bool any = false;
  for (const Segment& s : segments_) any = any || s.graph != nullptr;
  if (any) {
    DeviceRuntime& runtime = RuntimeFor(options_.device);
    runtime.Synchronize(options_.device);  // a launched graph may still be running
    for (Segment& s : segments_) {
      if (s.graph != nullptr) runtime.DestroyGraph(options_.device, s.graph);
      s.graph = nullptr;
    }
  }
  segments_.clear();
  recorded_ = false;
}

int Executor::graph_segments() const {
  int count = 0;
  for (const Segment& s : segments_) count += s.graph != nullptr;
  return count;
}

void Executor::RunNodes(int begin, int end) {
  KILN_CHECK(0 <= begin && begin <= end && end <= static_cast<int>(nodes_.size()));
  for (int n = begin; n < end; ++n) {
    RunKernels(n, n + 1);
    NotifyGradReady(n, n + 1);
  }
}

void Executor::RunKernels(int begin, int end) {
  for (int n = begin; n < end; ++n) {
    BoundNode& bn = nodes_[n];
    if (!bn.kernel) continue;
    if (options_.profile) {
      // Note [Profiling on a device]
      // Kernels on a device run asynchronously: timing Run() alone would measure the launch.
      // When profiling on a device the executor waits for the device before and after each node,
      // so a node's time is its device time plus one launch and one synchronization (some
      // microseconds) — fine for finding where a step's time goes, not for timing the step.
      const bool device = !options_.device.is_cpu();
      if (device) RuntimeFor(options_.device).Synchronize(options_.device);
      const auto t0 = std::chrono::steady_clock::now();
      bn.kernel->Run(bn.ctx);
      if (device) RuntimeFor(options_.device).Synchronize(options_.device);
      node_seconds_[n] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
      bn.kernel->Run(bn.ctx);
    }
  }
}

void Executor::NotifyGradReady(int begin, int end) {
  if (!grad_ready_) return;
  for (int n = begin; n < end; ++n) {
    if (nodes_[n].grad_ready_param >= 0) grad_ready_(nodes_[n].grad_ready_param);
  }
}

const Tensor& Executor::value(ValueId id) const {
  KILN_CHECK(id >= 0 && id < static_cast<int>(values_.size()) && values_[id].defined())
      << "value " << id << " is not placed";
  return values_[id];
}

void Executor::ZeroGrads() {
  if (plan_.grads_bytes == 0) return;
  if (options_.device.is_cpu()) {
    std::memset(grads_.data(), 0, plan_.grads_bytes);
  } else {
    RuntimeFor(options_.device).Memset(grads_.data(), 0, plan_.grads_bytes, options_.device);
  }
}

std::string Executor::ProfileReport() const {
  std::map<std::string, std::pair<int, double>> per_op;
  for (int n = 0; n < static_cast<int>(nodes_.size()); ++n) {
    if (!nodes_[n].kernel) continue;
    auto& e = per_op[graph_.node(n).op->name];
    e.first += 1;
    e.second += node_seconds_[n];
  }
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [op, e] : per_op) {
    rows.emplace_back(e.second, absl::StrCat(op, ": ", e.first, " nodes, ", e.second * 1e3, " ms"));
  }
  std::sort(rows.rbegin(), rows.rend());
  std::ostringstream os;
  for (const auto& r : rows) os << r.second << "\n";
  return os.str();
}

absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const std::vector<Tensor>& inputs,
                                          std::any attrs) {
  if (inputs.empty()) return absl::InvalidArgumentError(absl::StrCat("op ", op, ": no inputs"));
  const OpSchema* schema = OpRegistry::Global().Find(op);
  if (schema == nullptr) return absl::NotFoundError(absl::StrCat("unknown op \"", op, "\""));
  const Device device = inputs[0].device();
  Graph graph;
  GraphBuilder b(&graph);
  std::vector<ValueId> ins;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string name =
        i < schema->input_names.size() ? schema->input_names[i] : absl::StrCat("input", i);
    if (!inputs[i].defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("op ", op, ": argument ", name, " is an undefined tensor"));
    }
    if (inputs[i].device() != device) {
      return absl::InvalidArgumentError(
          absl::StrCat("op ", op, ": argument ", name, " is on ", inputs[i].device().ToString(),
                       " but ", schema->input_names.empty() ? "input 0" : schema->input_names[0],
                       " is on ", device.ToString()));
    }
    ins.push_back(b.Input(name, TensorType{inputs[i].sizes(), inputs[i].dtype()}));
  }
  const std::vector<ValueId> outs = b.Apply(op, ins, std::move(attrs));
  KILN_RETURN_IF_ERROR(b.status());
  for (ValueId o : outs) graph.MarkOutput(o);
  ExecutorOptions options;
  options.device = device;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> exec,
                        Executor::Create(std::move(graph), options));
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor dst = exec->value(ins[i]);
    dst.CopyFrom(inputs[i]);
  }
  exec->Run();
  std::vector<Tensor> results;
  for (ValueId o : outs) results.push_back(exec->value(o).Clone());
  return results;
}

}  // namespace kiln::graph
