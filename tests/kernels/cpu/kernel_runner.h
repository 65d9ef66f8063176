// Runs one registered CPU kernel eagerly, outside any graph: instantiate it from the registry,
// bind tensors and attributes into a KernelContext, size and allocate its workspace, Prepare once,
// then Run as often as asked. For kernel tests and the kernel benchmark only — the real executor
// lives in engine/graph.
#pragma once

#include <any>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/kernel.h"
#include "engine/core/storage.h"
#include "engine/core/tensor.h"

namespace kiln::testing {

class KernelRunner {
 public:
  // Finds the kernel for (op, CPU, dtype) — dtype being the dispatch input's — and prepares it on
  // the given tensors. Outputs are preallocated by the caller and may alias inputs (in-place ops).
  KernelRunner(const std::string& op, DType dtype, std::vector<Tensor> inputs,
               std::vector<Tensor> outputs, std::any attrs = {});

  void Run();
  const Tensor& output(int i) const { return outputs_.at(i); }
  size_t workspace_bytes() const { return context_.workspace_bytes; }

 private:
  std::unique_ptr<Kernel> kernel_;
  std::vector<Tensor> inputs_;
  std::vector<Tensor> outputs_;
  std::any attrs_;
  Storage workspace_;
  KernelContext context_;
};

// One-shot: builds a runner, runs once, returns the outputs.
std::vector<Tensor> RunKernel(const std::string& op, DType dtype, std::vector<Tensor> inputs,
                              std::vector<Tensor> outputs, std::any attrs = {});

}  // namespace kiln::testing
