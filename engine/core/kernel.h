// The kernel interface and registry: a kernel is registered once per (op name, device type, dtype)
// and instantiated once per graph node, so it can cache per-shape state (oneDNN primitives) in
// Prepare and then run every step without allocating. Ops (engine/ops) and backends (kernels/*)
// meet only through this file. See Note [Kernels are per node].
#pragma once

#include <any>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/core/device.h"
#include "engine/core/dtype.h"
#include "engine/core/status.h"
#include "engine/core/tensor.h"

namespace kiln {

// Note [Kernels are per node]
// The executor creates one Kernel object per node when a plan is bound, with the node's tensors
// already placed. Prepare runs once (it may allocate: primitive creation, lookup tables); Run runs
// every step and must not allocate. Scratch memory comes from the arena: WorkspaceBytes tells the
// planner how much, and Run receives it in ctx.workspace, live only for that node.

struct KernelContext {
  const Tensor* inputs = nullptr;
  int num_inputs = 0;
  Tensor* outputs = nullptr;
  int num_outputs = 0;
  const std::any* attrs = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  const Tensor& input(int i) const {
    KILN_CHECK(i >= 0 && i < num_inputs) << "input " << i << " of " << num_inputs;
    return inputs[i];
  }
  Tensor& output(int i) const {
    KILN_CHECK(i >= 0 && i < num_outputs) << "output " << i << " of " << num_outputs;
    return outputs[i];
  }
  template <typename T>
  const T& attrs_as() const {
    const T* a = attrs ? std::any_cast<T>(attrs) : nullptr;
    KILN_CHECK(a != nullptr) << "kernel read attributes of the wrong type";
    return *a;
  }
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Scratch bytes Run needs for the bound shapes.
  virtual size_t WorkspaceBytes(const KernelContext& /*ctx*/) const { return 0; }
  // One-time setup for the bound shapes and addresses.
  virtual absl::Status Prepare(const KernelContext& /*ctx*/) { return absl::OkStatus(); }
  // Runs the op on the bound tensors. Must not allocate.
  virtual void Run(const KernelContext& ctx) = 0;
};

using KernelFactory = std::unique_ptr<Kernel> (*)();

class KernelRegistry {
 public:
  static KernelRegistry& Global();
  void Register(std::string_view op, DeviceType device, DType dtype, KernelFactory factory);
  // Null when nothing is registered for the triple.
  KernelFactory Find(std::string_view op, DeviceType device, DType dtype) const;
  // The dtypes registered for (op, device), for error messages.
  std::vector<DType> DTypesFor(std::string_view op, DeviceType device) const;
  // The ops with at least one kernel on `device`, each once, sorted.
  std::vector<std::string> OpsOn(DeviceType device) const;

 private:
  struct Entry {
    std::string op;
    DeviceType device;
    DType dtype;
    KernelFactory factory;
  };
  std::vector<Entry> entries_;
};

// Adapts a plain function to a Kernel (for ops with no per-node state).
using KernelFn = void (*)(const KernelContext& ctx);
template <KernelFn kFn>
class FunctionKernel final : public Kernel {
 public:
  void Run(const KernelContext& ctx) override { kFn(ctx); }
};

namespace internal {
struct KernelRegistrar {
  KernelRegistrar(std::string_view op, DeviceType device, DType dtype, KernelFactory factory) {
    KernelRegistry::Global().Register(op, device, dtype, factory);
  }
};
}  // namespace internal

}  // namespace kiln

#define KILN_KERNEL_UNIQUE_(line) kiln_kernel_registrar_##line
#define KILN_KERNEL_UNIQUE(line) KILN_KERNEL_UNIQUE_(line)

// KILN_REGISTER_KERNEL("layer_norm", kCPU, kF32, MyKernelClass);
#define KILN_REGISTER_KERNEL(op, device, dtype, KernelClass)                                 \
  static ::kiln::internal::KernelRegistrar KILN_KERNEL_UNIQUE(__COUNTER__)(                     \
      op, ::kiln::DeviceType::device, ::kiln::DType::dtype,                                  \
      []() -> std::unique_ptr<::kiln::Kernel> { return std::make_unique<KernelClass>(); })

// KILN_REGISTER_KERNEL_FN("gelu", kCPU, kF32, GeluForward);
#define KILN_REGISTER_KERNEL_FN(op, device, dtype, fn) \
  KILN_REGISTER_KERNEL(op, device, dtype, ::kiln::FunctionKernel<fn>)

// The same kernel for each floating dtype (f32, bf16, f16):
// KILN_REGISTER_FLOAT_KERNELS("gelu", kCPU, GeluKernel);
#define KILN_REGISTER_FLOAT_KERNELS(op, device, KernelClass) \
  KILN_REGISTER_KERNEL(op, device, kF32, KernelClass);       \
  KILN_REGISTER_KERNEL(op, device, kBF16, KernelClass);      \
  KILN_REGISTER_KERNEL(op, device, kF16, KernelClass)
#define KILN_REGISTER_FLOAT_KERNEL_FNS(op, device, fn) \
  KILN_REGISTER_FLOAT_KERNELS(op, device, ::kiln::FunctionKernel<fn>)
