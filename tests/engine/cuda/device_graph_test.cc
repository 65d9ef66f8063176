// [gpu] Device graphs (Note [Device graphs]): an executor with device_graphs replays its recorded
// step with new inputs and matches the CPU every time; a kernel that allocates device memory while
// the step is recorded (from the allocator's cache, so no CUDA call refuses it) makes the executor
// refuse the graph, say why, and keep running directly with correct results. Graph segments (Note
// [Graph segments]): a host-work node runs directly between two recorded segments every run, and
// grad-ready callbacks run between segments, each seeing its gradient final, as on the CPU.
#include <string>
#include <vector>

#include "engine/core/kernel.h"
#include "engine/graph/builder.h"
#include "engine/graph/executor.h"
#include "engine/graph/op_schema.h"
#include "engine/nn/model.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "tests/engine/graph/tiny_gpt2.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kiln::testing {
namespace {

// "test_copy_via_temporary": y = x, through a device temporary allocated in Run — what no kernel
// may do (Note [Kernels are per node]); registered for CUDA f32 only, for this test.
void RunCopyViaTemporary(const KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor tmp = Tensor::Zeros(x.sizes(), x.dtype(), x.device());
  tmp.CopyFrom(x);  // device to device: ordered on the compute stream, recordable
  ctx.output(0).CopyFrom(tmp);
}

// "test_add_run_count": y = x + the number of times this node has run — host state that changes
// every run, as a communicating op's does; a host-work op, so never recorded.
class AddRunCountKernel final : public Kernel {
 public:
  void Run(const KernelContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& y = ctx.output(0);
    y.Fill(static_cast<float>(++runs_));  // a stream-ordered fill on a device
    auto sum = graph::RunOp("add", {y, x});
    KILN_CHECK_OK(sum.status());
    y.CopyFrom((*sum)[0]);
  }

 private:
  int runs_ = 0;
};

graph::OpSchema SameShapeSchema(const std::string& name, bool host_work) {
  graph::OpSchema s;
  s.name = name;
  s.input_names = {"x"};
  s.host_work = host_work;
  s.infer = [](const std::vector<graph::TensorType>& in, const std::any&) {
    return absl::StatusOr<std::vector<graph::TensorType>>(in);
  };
  return s;
}

struct Registration {
  Registration() {
    graph::OpRegistry::Global().Register(SameShapeSchema("test_copy_via_temporary", false));
    graph::OpRegistry::Global().Register(SameShapeSchema("test_add_run_count", true));
  }
} registration;
KILN_REGISTER_KERNEL_FN("test_copy_via_temporary", kCUDA, kF32, RunCopyViaTemporary);
KILN_REGISTER_KERNEL("test_add_run_count", kCUDA, kF32, AddRunCountKernel);
KILN_REGISTER_KERNEL("test_add_run_count", kCPU, kF32, AddRunCountKernel);

struct Built {
  std::unique_ptr<graph::Executor> exec;
  graph::ValueId x, w, y;
};

enum class Extra { kNone, kAllocating, kHostWork };

// y = gelu(x w + x w), optionally through the allocating copy or the host-work op: (4, 32) x
// (32, 32).
Built Build(Device device, Extra extra) {
  graph::Graph g;
  graph::GraphBuilder b(&g);
  const graph::ValueId x = b.Input("x", {{4, 32}, DType::kF32});
  const graph::ValueId w = b.Input("w", {{32, 32}, DType::kF32});
  graph::ValueId h = ops::Matmul(b, x, w);
  h = ops::Add(b, h, h);
  if (extra == Extra::kAllocating) h = b.Apply("test_copy_via_temporary", {h})[0];
  if (extra == Extra::kHostWork) h = b.Apply("test_add_run_count", {h})[0];
  const graph::ValueId y = ops::Gelu(b, h);
  KILN_CHECK_OK(b.status());
  g.MarkOutput(y);
  graph::ExecutorOptions eo;
  eo.device = device;
  eo.device_graphs = true;
  auto exec = graph::Executor::Create(std::move(g), eo);
  KILN_CHECK_OK(exec.status());
  return {std::move(*exec), x, w, y};
}

// Five runs with new inputs each time; every output equals the CPU's.
void RunAgainstCpu(Built& gpu, Built& cpu) {
  for (int run = 0; run < 5; ++run) {
    const Tensor x = RandomTensor({4, 32}, DType::kF32, 10 + run);
    const Tensor w = RandomTensor({32, 32}, DType::kF32, 20 + run, 0.2f);
    cpu.exec->value(cpu.x).CopyFrom(x);
    cpu.exec->value(cpu.w).CopyFrom(w);
    cpu.exec->Run();
    gpu.exec->value(gpu.x).CopyFrom(x);
    gpu.exec->value(gpu.w).CopyFrom(w);
    gpu.exec->Run();
    INFO("run " << run);
    KILN_REQUIRE_CLOSE(gpu.exec->value(gpu.y).ToFloats(), cpu.exec->value(cpu.y).ToFloats(), 1e-5);
  }
}

TEST_CASE("a recorded step replays with new inputs", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  Built gpu = Build(Device::CUDA(0), Extra::kNone);
  Built cpu = Build(Device::CPU(), Extra::kNone);
  RunAgainstCpu(gpu, cpu);
  INFO(gpu.exec->graph_refusal());
  REQUIRE(gpu.exec->graph_refusal().empty());
  REQUIRE(gpu.exec->graph_launches() == 4);  // runs 2-5: recorded once, replayed
  REQUIRE(gpu.exec->graph_segments() == 1);
  REQUIRE(cpu.exec->graph_launches() == 0);
}

TEST_CASE("a kernel that allocates while recorded gets no graph, and the step stays right",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  Built gpu = Build(Device::CUDA(0), Extra::kAllocating);
  Built cpu = Build(Device::CPU(), Extra::kNone);
  RunAgainstCpu(gpu, cpu);
  REQUIRE(gpu.exec->graph_launches() == 0);
  REQUIRE_THAT(gpu.exec->graph_refusal(), Catch::Contains("allocated device memory"));
}

TEST_CASE("a host-work node runs directly between two recorded segments, every run",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  Built gpu = Build(Device::CUDA(0), Extra::kHostWork);
  Built cpu = Build(Device::CPU(), Extra::kHostWork);
  RunAgainstCpu(gpu, cpu);  // recorded, the run count would stay 2 in every replay
  INFO(gpu.exec->graph_refusal());
  REQUIRE(gpu.exec->graph_refusal().empty());
  REQUIRE(gpu.exec->graph_launches() == 4);
  REQUIRE(gpu.exec->graph_segments() == 2);  // matmul and add | host work | gelu
}

// A tiny GPT-2 training graph bound to `device`; with overlap groups on a device, a callback that
// copies each gradient out as it becomes ready.
struct Training {
  nn::ModelGraph model;
  std::unique_ptr<graph::Executor> exec;
  std::vector<std::pair<int, std::vector<float>>> seen;  // (param, gradient) per callback
};

std::unique_ptr<Training> BuildTraining(Device device) {
  const nn::ModelConfig c = TinyGpt2Config(2, 32, 64, 16);
  nn::GraphOptions go;
  go.batch = 2;
  go.seq_len = 16;
  auto model = nn::BuildModel(c, go);
  KILN_CHECK_OK(model.status());
  auto t = std::make_unique<Training>();
  t->model = std::move(*model);
  graph::ExecutorOptions eo;
  eo.device = device;
  eo.device_graphs = true;
  auto exec = graph::Executor::Create(t->model.graph, eo);
  KILN_CHECK_OK(exec.status());
  t->exec = std::move(*exec);
  // Groups of three consecutive parameters: a segment ends where each group's last gradient is
  // final (the parameters' gradients finish in reverse order, so not at every third one).
  std::vector<std::vector<int>> groups;
  const int params = static_cast<int>(t->model.graph.params().size());
  for (int p = 0; p < params; p += 3) {
    groups.emplace_back();
    for (int q = p; q < std::min(p + 3, params); ++q) groups.back().push_back(q);
  }
  Training* self = t.get();
  t->exec->SetGradReadyCallback(
      [self](int p) {
        const graph::ValueId grad = self->model.graph.grads()[p];
        self->seen.emplace_back(p, self->exec->value(grad).ToFloats());  // waits for the device
      },
      groups);
  return t;
}

TEST_CASE("grad-ready callbacks run between recorded segments and see final gradients",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  auto gpu = BuildTraining(Device::CUDA(0));
  auto cpu = BuildTraining(Device::CPU());
  const int64_t n = cpu->exec->memory_plan().param_elements;
  std::vector<int32_t> ids, next;
  for (uint32_t t : RandomTokens(32, 64, 3)) ids.push_back(static_cast<int32_t>(t));
  for (uint32_t t : RandomTokens(32, 64, 4)) next.push_back(static_cast<int32_t>(t));
  for (int run = 0; run < 4; ++run) {
    const Tensor w = RandomTensor({n}, DType::kF32, 40 + run, 0.1f);
    for (Training* t : {gpu.get(), cpu.get()}) {
      t->seen.clear();
      t->exec->flat_params().CopyFrom(w);
      t->exec->value(t->model.inputs).CopyFrom(Tensor::FromVector(ids, {2, 16}));
      t->exec->value(t->model.targets).CopyFrom(Tensor::FromVector(next, {2, 16}));
      t->exec->value(t->model.backward.loss_seed).Fill(1.0f);
      t->exec->ZeroGrads();
      t->exec->Run();
    }
    INFO("run " << run);
    REQUIRE(gpu->seen.size() == cpu->seen.size());
    REQUIRE(!cpu->seen.empty());
    for (size_t i = 0; i < cpu->seen.size(); ++i) {
      INFO("callback " << i << ": parameter " << cpu->seen[i].first);
      REQUIRE(gpu->seen[i].first == cpu->seen[i].first);
      KILN_REQUIRE_CLOSE(gpu->seen[i].second, cpu->seen[i].second, 1e-5);
    }
  }
  INFO(gpu->exec->graph_refusal());
  REQUIRE(gpu->exec->graph_refusal().empty());
  REQUIRE(gpu->exec->graph_launches() == 3);
  REQUIRE(gpu->exec->graph_segments() >= 3);
}

}  // namespace
}  // namespace kiln::testing
