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
  // On a GPU, record Run() once into a device graph and replay it (Note [Device graphs]); off
  // when profiling, with a grad-ready callback, with host-work nodes, or KILN_CUDA_GRAPHS=0.
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
  // recorded and launched as a graph, later ones replayed).
  void Run();
  // Runs nodes [begin, end) (e.g. forward only, for evaluation).
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

  // Called with the parameter index right after its accumulate_grad node runs.
  void SetGradReadyCallback(std::function<void(int param_index)> callback) {
    grad_ready_ = std::move(callback);
  }

  const Graph& graph() const { return graph_; }
  const MemoryPlan& memory_plan() const { return plan_; }
  Device device() const { return options_.device; }
  // Turns per-node timing on or off (Note [Profiling on a device]).
  void SetProfiling(bool on) { options_.profile = on; }
  // Per-op totals when options.profile is set: "op: calls, total ms".
  std::string ProfileReport() const;
  // Runs that replayed the device graph, and why none was recorded ("" when one was or none was
  // tried).
  int64_t graph_launches() const { return graph_launches_; }
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
  absl::Status Bind();
  bool GraphsApply() const;

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
  bool host_work_ = false;  // a node's kernel does host-side work each run
  int plain_runs_ = 0;
  GraphHandle device_graph_ = nullptr;
  int64_t graph_launches_ = 0;
  std::string graph_refusal_;
};

// Runs one op eagerly: a one-node graph, planned and executed. For tests and tools; outputs are
// fresh tensors. All inputs must be on the same device.
absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const std::vector<Tensor>& inputs,
                                          std::any attrs = {});

}  // namespace kiln::graph
