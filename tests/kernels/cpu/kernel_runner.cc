// The eager single-kernel runner for tests and benchmarks.
#include "tests/kernels/cpu/kernel_runner.h"

#include "engine/core/status.h"

namespace kiln::testing {

KernelRunner::KernelRunner(const std::string& op, DType dtype, std::vector<Tensor> inputs,
                           std::vector<Tensor> outputs, std::any attrs)
    : inputs_(std::move(inputs)), outputs_(std::move(outputs)), attrs_(std::move(attrs)) {
  const KernelFactory factory = KernelRegistry::Global().Find(op, DeviceType::kCPU, dtype);
  KILN_CHECK(factory != nullptr) << "no CPU kernel registered for " << op << " " << dtype;
  kernel_ = factory();
  context_.inputs = inputs_.data();
  context_.num_inputs = static_cast<int>(inputs_.size());
  context_.outputs = outputs_.data();
  context_.num_outputs = static_cast<int>(outputs_.size());
  context_.attrs = attrs_.has_value() ? &attrs_ : nullptr;
  const size_t bytes = kernel_->WorkspaceBytes(context_);
  if (bytes > 0) {
    workspace_ = Storage::Allocate(bytes, Device::CPU());
    // Kernels get uninitialized scratch from the executor: make stale contents visible.
    std::memset(workspace_.data(), 0xff, bytes);
  }
  context_.workspace = workspace_.data();
  context_.workspace_bytes = bytes;
  KILN_CHECK_OK(kernel_->Prepare(context_));
}

void KernelRunner::Run() { kernel_->Run(context_); }

std::vector<Tensor> RunKernel(const std::string& op, DType dtype, std::vector<Tensor> inputs,
                              std::vector<Tensor> outputs, std::any attrs) {
  KernelRunner runner(op, dtype, std::move(inputs), outputs, std::move(attrs));
  runner.Run();
  return outputs;
}

}  // namespace kiln::testing
