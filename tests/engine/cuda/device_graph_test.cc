// [gpu] Device graphs (Note [Device graphs]): an executor with device_graphs replays its recorded
// step with new inputs and matches the CPU every time; a kernel that allocates device memory while
// the step is recorded (from the allocator's cache, so no CUDA call refuses it) makes the executor
// refuse the graph, say why, and keep running directly with correct results.
#include <string>
#include <vector>

#include "engine/core/kernel.h"
#include "engine/graph/builder.h"
#include "engine/graph/executor.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
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

struct Registration {
  Registration() {
    graph::OpSchema s;
    s.name = "test_copy_via_temporary";
    s.input_names = {"x"};
    s.infer = [](const std::vector<graph::TensorType>& in, const std::any&) {
      return absl::StatusOr<std::vector<graph::TensorType>>(in);
    };
    graph::OpRegistry::Global().Register(s);
  }
} registration;
KILN_REGISTER_KERNEL_FN("test_copy_via_temporary", kCUDA, kF32, RunCopyViaTemporary);

struct Built {
  std::unique_ptr<graph::Executor> exec;
  graph::ValueId x, w, y;
};

// y = gelu(x w + x w), optionally through the allocating copy: (4, 32) x (32, 32).
Built Build(Device device, bool allocating) {
  graph::Graph g;
  graph::GraphBuilder b(&g);
  const graph::ValueId x = b.Input("x", {{4, 32}, DType::kF32});
  const graph::ValueId w = b.Input("w", {{32, 32}, DType::kF32});
  graph::ValueId h = ops::Matmul(b, x, w);
  h = ops::Add(b, h, h);
  if (allocating) h = b.Apply("test_copy_via_temporary", {h})[0];
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
  Built gpu = Build(Device::CUDA(0), false);
  Built cpu = Build(Device::CPU(), false);
  RunAgainstCpu(gpu, cpu);
  INFO(gpu.exec->graph_refusal());
  REQUIRE(gpu.exec->graph_refusal().empty());
  REQUIRE(gpu.exec->graph_launches() == 4);  // runs 2-5: recorded once, replayed
  REQUIRE(cpu.exec->graph_launches() == 0);
}

TEST_CASE("a kernel that allocates while recorded gets no graph, and the step stays right",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  Built gpu = Build(Device::CUDA(0), true);
  Built cpu = Build(Device::CPU(), false);
  RunAgainstCpu(gpu, cpu);
  REQUIRE(gpu.exec->graph_launches() == 0);
  REQUIRE_THAT(gpu.exec->graph_refusal(), Catch::Contains("allocated device memory"));
}

}  // namespace
}  // namespace kiln::testing
