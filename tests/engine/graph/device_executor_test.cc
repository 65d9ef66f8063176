// The executor on a device, on the CPU alone: a fake CUDA device (tests/engine/core/fake_device.h)
// whose "CUDA kernels" delegate to the CPU kernels over the same memory. A GPT-2 and a Llama
// training step bound on that device — arena, parameters, gradients and constants allocated
// there, inputs staged in, the loss read back, ZeroGrads through the runtime — must give exactly
// the CPU executor's loss and gradients. This is the host-side test of plan placement and staging;
// the real kernels are compared with the CPU in tests/kernels/cuda ([gpu]).
#include <array>
#include <random>
#include <utility>

#include "engine/core/kernel.h"
#include "engine/graph/executor.h"
#include "engine/nn/model.h"
#include "tests/engine/core/fake_device.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

// A host view of t (same memory), so a CPU kernel accepts it.
Tensor HostView(const Tensor& t) {
  if (!t.defined()) return t;
  return Tensor::FromStorageStrided(
      Storage::Wrap(t.storage().data(), t.storage().nbytes(), Device::CPU()), t.offset(), t.sizes(),
      t.strides(), t.dtype());
}

class DelegatingKernel final : public Kernel {
 public:
  explicit DelegatingKernel(KernelFactory cpu) : cpu_(cpu()) {}
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    DelegatingKernel* self = const_cast<DelegatingKernel*>(this);
    return cpu_->WorkspaceBytes(self->Host(ctx));
  }
  absl::Status Prepare(const KernelContext& ctx) override { return cpu_->Prepare(Host(ctx)); }
  void Run(const KernelContext& ctx) override { cpu_->Run(Host(ctx)); }

 private:
  const KernelContext& Host(const KernelContext& ctx) {
    inputs_.clear();
    outputs_.clear();
    for (int i = 0; i < ctx.num_inputs; ++i) inputs_.push_back(HostView(ctx.inputs[i]));
    for (int i = 0; i < ctx.num_outputs; ++i) outputs_.push_back(HostView(ctx.outputs[i]));
    host_ = ctx;
    host_.inputs = inputs_.data();
    host_.outputs = outputs_.data();
    return host_;
  }
  std::unique_ptr<Kernel> cpu_;
  std::vector<Tensor> inputs_, outputs_;
  KernelContext host_;
};

constexpr int kMaxDelegates = 512;
std::array<KernelFactory, kMaxDelegates> g_cpu_factories;

template <int I>
std::unique_ptr<Kernel> MakeDelegate() {
  return std::make_unique<DelegatingKernel>(g_cpu_factories[I]);
}

template <int... I>
constexpr std::array<KernelFactory, sizeof...(I)> DelegateTable(std::integer_sequence<int, I...>) {
  return {&MakeDelegate<I>...};
}

// Registers, for every CPU kernel, a kCUDA kernel that runs it in place.
void RegisterDelegates() {
  static bool done = [] {
    constexpr auto table = DelegateTable(std::make_integer_sequence<int, kMaxDelegates>{});
    // Every CPU kernel, so that whatever the model builders and passes emit (fused ops included)
    // has its delegate.
    KernelRegistry& registry = KernelRegistry::Global();
    const std::vector<std::string> ops = registry.OpsOn(DeviceType::kCPU);
    int next = 0;
    for (const std::string& op : ops) {
      for (DType dtype : registry.DTypesFor(op, DeviceType::kCPU)) {
        KILN_CHECK(next < kMaxDelegates);
        g_cpu_factories[next] = registry.Find(op, DeviceType::kCPU, dtype);
        registry.Register(op, DeviceType::kCUDA, dtype, table[next]);
        ++next;
      }
    }
    return true;
  }();
  (void)done;
}

struct Bound {
  nn::ModelGraph model;
  std::unique_ptr<graph::Executor> exec;
};

Bound Bind(const nn::ModelConfig& config, DType compute, Device device) {
  nn::GraphOptions go;
  go.batch = 2;
  go.seq_len = 16;
  go.compute = compute;
  auto model = nn::BuildModel(config, go);
  REQUIRE(model.ok());
  Bound b;
  b.model = std::move(*model);
  graph::ExecutorOptions eo;
  eo.device = device;
  graph::Graph g = b.model.graph;
  auto exec = graph::Executor::Create(std::move(g), eo);
  INFO(exec.status());
  REQUIRE(exec.ok());
  b.exec = std::move(*exec);
  return b;
}

// One step: weights, a batch and the loss seed written through Tensor copies; returns (loss,
// gradients) read back to the host.
std::pair<float, std::vector<float>> Step(Bound& b, const std::vector<float>& weights, int vocab) {
  const int64_t n = b.exec->memory_plan().param_elements;
  b.exec->flat_params().CopyFrom(Tensor::FromFloats(weights, {n}));
  std::vector<int32_t> ids(32), next(32);
  for (int i = 0; i < 32; ++i) {
    ids[i] = (i * 5 + 3) % vocab;
    next[i] = (i * 5 + 8) % vocab;
  }
  b.exec->value(b.model.inputs).CopyFrom(Tensor::FromVector(ids, {2, 16}));
  b.exec->value(b.model.targets).CopyFrom(Tensor::FromVector(next, {2, 16}));
  b.exec->value(b.model.backward.loss_seed).Fill(1.0f);
  b.exec->ZeroGrads();
  b.exec->Run();
  return {b.exec->value(b.model.loss).Item(), b.exec->flat_grads().ToFloats()};
}

// Two layers, d_model 32, vocab 48, T 16 (Llama with grouped-query heads).
nn::ModelConfig TinyConfig(const std::string& family) {
  nn::ModelConfig c;
  c.family = family;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = family == "llama" ? 1 : 2;
  c.d_model = 32;
  c.d_ff = 64;
  c.vocab_size = 48;
  c.max_seq_len = 16;
  return c;
}

TEST_CASE("a training step bound on a device equals the CPU executor's exactly", "[device]") {
  FakeRuntime* runtime = InstallFakeCuda();
  RegisterDelegates();
  for (const char* family : {"gpt2", "llama"}) {
    for (DType compute : {DType::kF32, DType::kBF16}) {
      INFO(family << " " << DTypeName(compute));
      const nn::ModelConfig c = TinyConfig(family);
      Bound cpu = Bind(c, compute, Device::CPU());
      Bound dev = Bind(c, compute, Device::CUDA(0));
      REQUIRE(dev.exec->flat_params().device() == Device::CUDA(0));
      REQUIRE(dev.exec->value(dev.model.loss).device() == Device::CUDA(0));
      const int64_t n = cpu.exec->memory_plan().param_elements;
      REQUIRE(dev.exec->memory_plan().param_elements == n);
      std::vector<float> w(static_cast<size_t>(n));
      std::mt19937 rng(3);
      std::normal_distribution<float> normal(0.0f, 0.05f);
      for (float& x : w) x = normal(rng);
      const int copies = runtime->copies, memsets = runtime->memsets;
      const auto [cpu_loss, cpu_grads] = Step(cpu, w, c.vocab_size);
      const auto [dev_loss, dev_grads] = Step(dev, w, c.vocab_size);
      REQUIRE(runtime->copies > copies);    // staging went through the runtime
      REQUIRE(runtime->memsets > memsets);  // so did ZeroGrads and zero-fills
      REQUIRE(dev_loss == cpu_loss);
      REQUIRE(dev_grads == cpu_grads);
      dev.exec->ZeroGrads();
      REQUIRE(dev.exec->flat_grads().ToFloats() == std::vector<float>(dev_grads.size(), 0.0f));
    }
  }
}

// Note [One arena at a time]: binding sizes the workspaces with a provisional arena, then
// allocates the final one; the provisional one is freed first, so the peak is the bound regions
// (with it still held, the peak was the two arenas' sum).
TEST_CASE("binding holds one arena at a time", "[device]") {
  InstallFakeCuda();
  RegisterDelegates();
  FakeDeviceAllocator* allocator = FakeCudaAllocator();
  const nn::ModelConfig c = TinyConfig("gpt2");
  const int64_t before = allocator->live_bytes;
  allocator->peak_bytes = before;
  Bound dev = Bind(c, DType::kBF16, Device::CUDA(0));
  const int64_t held = allocator->live_bytes - before;
  const graph::MemoryPlan& plan = dev.exec->memory_plan();
  INFO("held " << held << ", peak " << allocator->peak_bytes - before << ", arena "
               << plan.arena_bytes);
  REQUIRE(held >= static_cast<int64_t>(plan.arena_bytes + plan.params_bytes + plan.grads_bytes));
  REQUIRE(allocator->peak_bytes - before == held);
}

TEST_CASE("RunOp on device tensors returns device tensors", "[device]") {
  InstallFakeCuda();
  RegisterDelegates();
  const Tensor a = Tensor::FromFloats({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::FromFloats({10, 20, 30}, {3});
  Tensor da = Tensor::Zeros({2, 3}, DType::kF32, Device::CUDA(0));
  Tensor db = Tensor::Zeros({3}, DType::kF32, Device::CUDA(0));
  da.CopyFrom(a);
  db.CopyFrom(b);
  auto out = graph::RunOp("add", {da, db});
  REQUIRE(out.ok());
  REQUIRE((*out)[0].device() == Device::CUDA(0));
  REQUIRE((*out)[0].ToFloats() == std::vector<float>{11, 22, 33, 14, 25, 36});
  // Mixed devices are refused with the reason.
  auto mixed = graph::RunOp("add", {da, b});
  REQUIRE_FALSE(mixed.ok());
  REQUIRE_THAT(std::string(mixed.status().message()), Catch::Contains("is on cpu"));
}

}  // namespace
}  // namespace kiln::testing
