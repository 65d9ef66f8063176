// The executor: binds a planned graph to memory on one device and runs it. Binding allocates the
// arena and the flat parameter/gradient/input buffers once, creates one kernel per node and lets
// each prepare; Run then executes the nodes in order without allocating. A callback reports each
// parameter gradient as soon as its slot is final (data parallelism overlaps on it).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/device_runtime.h"
#include "engine/core/kernel.h"
#include "engine/core/tensor.h"
#include "engine/graph/graph.h"
#include "engine/graph/memory_planner.h"

namespace kiln::graph {

struct ExecutorOptions {
  Device device = Device::CPU();
  PlannerOptions planner;
  bool profile = false;  // time every node (see ProfileReport, SetProfiling)
  // On a GPU, record Run() once into device graphs and replay them (Note [Device graphs], Note
  // [Graph segments]); off when profiling or with KILN_CUDA_GRAPHS=0.
  bool device_graphs = false;
  // Bind parameters to this storage instead of allocating (an evaluation or sampling graph sharing
  // a training executor's weights: same model, same parameter layout).
  Storage shared_params;
};

class Executor {
 public:
  // Plans memory for `graph` (which must not change afterwards), allocates, creates and prepares
  // the kernels. Fails with a clear Status when a kernel is missing for an op/device/dtype.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(Graph graph,
                                                          const ExecutorOptions& options = {});

  ~Executor();

  // Runs every node in order (on a GPU with device_graphs: the first run directly, the second
  // recorded and launched as graph segments, later ones replayed).
  void Run();
  // Runs nodes [begin, end) directly (e.g. forward only, for evaluation).
  void RunNodes(int begin, int end);

  // The bound tensor of any placed value: write inputs and parameters through it, read outputs.
  const Tensor& value(ValueId id) const;
  const Tensor& param(int index) const { return value(graph_.params()[index]); }
  // Flat views of every parameter and gradient (padding included; the parameters' dtype), for
  // optimizers and collectives. Undefined when the plan has no such region (external parameters,
  // or no gradient slots).
  const Tensor& flat_params() const { return flat_params_; }
  const Storage& params_storage() const { return params_; }
  const Tensor& flat_grads() const { return flat_grads_; }
  void ZeroGrads();

  // Called with the parameter index right after its accumulate_grad node runs — with device
  // graphs, right after the segment holding that node is launched (Note [Graph segments]). A
  // segment ends where the last parameter of one of `overlap_groups` becomes ready (a data-parallel
  // bucket, whose reduction then overlaps the rest of the step).
  void SetGradReadyCallback(std::function<void(int param_index)> callback,
                            const std::vector<std::vector<int>>& overlap_groups = {});

  const Graph& graph() const { return graph_; }
  const MemoryPlan& memory_plan() const { return plan_; }
  Device device() const { return options_.device; }
  // Turns per-node timing on or off (Note [Profiling on a device]).
  void SetProfiling(bool on) { options_.profile = on; }
  // Per-op totals when options.profile is set: "op: calls, total ms".
  std::string ProfileReport() const;
  // Runs that launched recorded graphs (the recording run included), the graphs each such run
  // launches, and why none were recorded ("" when they were or none was tried).
  int64_t graph_launches() const { return graph_launches_; }
  int graph_segments() const;
  const std::string& graph_refusal() const { return graph_refusal_; }

 private:
  struct BoundNode {
    std::unique_ptr<Kernel> kernel;  // null for views
    std::vector<Tensor> inputs, outputs;
    KernelContext ctx;
    int grad_ready_param = -1;  // accumulate_grad nodes: the parameter they finish
  };

  explicit Executor(Graph graph, const ExecutorOptions& options)
      : graph_(std::move(graph)), options_(options) {}
  // Note [Graph segments]: nodes [begin, end), recorded as one graph or (host work, or no kernel)
  // run directly.
  struct Segment {
    int begin = 0, end = 0;
    bool recorded = false;
    GraphHandle graph = nullptr;
  };

  absl::Status Bind();
  bool GraphsApply() const;
  std::vector<Segment> PlanSegments() const;
  void RecordSegments();
  void DestroyGraphs();
  void RunKernels(int begin, int end);  // no grad-ready callbacks
  void NotifyGradReady(int begin, int end);

  Graph graph_;
  ExecutorOptions options_;
  MemoryPlan plan_;
  Storage arena_, params_, grads_, inputs_, constants_;
  std::vector<Tensor> values_;
  Tensor flat_params_, flat_grads_;
  std::vector<BoundNode> nodes_;
  std::function<void(int)> grad_ready_;
  std::vector<double> node_seconds_;
  // Note [Device graphs]
  std::vector<bool> segment_break_;  // per node: a segment ends after it
  std::vector<Segment> segments_;
  bool recorded_ = false;
  int plain_runs_ = 0;
  int64_t graph_launches_ = 0;
  std::string graph_refusal_;
};

// Runs one op eagerly: a one-node graph, planned and executed. For tests and tools; outputs are
// fresh tensors. All inputs must be on the same device.
absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const std::vector<Tensor>& inputs,
                                          std::any attrs = {});

}  // namespace kiln::graph
