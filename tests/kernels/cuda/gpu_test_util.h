// Helpers of the [gpu] tests: the skip with the driver's reason where no device exists, random
// inputs identical on both backends, and the CPU-vs-CUDA comparison of one op through the real
// executor (graph::RunOp), which also exercises device binding and host<->device copies.
#pragma once

#include <any>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/core/device_runtime.h"
#include "engine/core/tensor.h"
#include "engine/graph/executor.h"
#include "tests/testing.h"

namespace kiln::testing {

// The reason no CUDA device can be used here, or "" when one can.
inline std::string NoGpuReason() {
  DeviceRuntime* runtime = GetDeviceRuntime(DeviceType::kCUDA);
  if (runtime == nullptr) return "the CUDA backend is not linked";
  const absl::Status s = runtime->Available();
  return s.ok() ? "" : std::string(s.message());
}

// At the top of every [gpu] test case.
#define KILN_REQUIRE_GPU()                                                   \
  do {                                                                       \
    const std::string kiln_no_gpu_ = ::kiln::testing::NoGpuReason();         \
    if (!kiln_no_gpu_.empty()) KILN_SKIP("no CUDA device: " + kiln_no_gpu_); \
  } while (0)

// Whether the CUDA device is the kernel emulation (kernels/cuda/emulation, the `_emulated` test
// targets): the [gpu] tests then run on the host CPU, far slower than on a device, and leave out
// the cases that are too large for it (saying so; see LeaveOutOnEmulation).
inline bool OnKernelEmulation() {
  DeviceRuntime* runtime = GetDeviceRuntime(DeviceType::kCUDA);
  return runtime != nullptr && runtime->Available().ok() &&
         runtime->DeviceName(0).find("emulation") != std::string::npos;
}

// True (and a line on stdout) when a case of `work` units is over the emulation's `budget`.
inline bool LeaveOutOnEmulation(const std::string& what, double work, double budget) {
  if (!OnKernelEmulation() || work <= budget) return false;
  std::printf("kernel emulation: left out (too large to emulate; runs on a GPU): %s\n",
              what.c_str());
  return true;
}

// On the kernel emulation, asks for `count` emulated devices (KILN_EMULATED_DEVICES, read when
// the CUDA runtime is first probed): call it from a namespace-scope initializer, before any test
// touches the runtime. Does nothing on a real device. Returns 0 for that initializer.
inline int UseEmulatedDevices([[maybe_unused]] int count) {
#if defined(KILN_ON_KERNEL_EMULATION)
  setenv("KILN_EMULATED_DEVICES", std::to_string(count).c_str(), /*overwrite=*/0);
#endif
  return 0;
}

inline Tensor RandomTensor(const Shape& shape, DType dtype, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(NumElements(shape)));
  for (float& x : v) x = normal(rng);
  return Tensor::FromFloats(v, shape, dtype);
}

inline Tensor ToCuda(const Tensor& t) {
  Tensor d = Tensor::Zeros(t.sizes(), t.dtype(), Device::CUDA(0));
  d.CopyFrom(t);
  return d;
}

// f32 within 1e-5 relative L2, 16-bit types within 1e-2 (the tolerances).
inline double ToleranceFor(DType dtype) { return dtype == DType::kF32 ? 1e-5 : 1e-2; }

// Runs `op` on the CPU and on CUDA with the same inputs and compares every output.
inline void CheckOpParity(const std::string& op, const std::vector<Tensor>& cpu_inputs,
                          std::any attrs, double tolerance) {
  absl::StatusOr<std::vector<Tensor>> cpu = graph::RunOp(op, cpu_inputs, attrs);
  INFO(op << " on cpu: " << cpu.status());
  REQUIRE(cpu.ok());
  std::vector<Tensor> dev;
  for (const Tensor& t : cpu_inputs) dev.push_back(ToCuda(t));
  absl::StatusOr<std::vector<Tensor>> gpu = graph::RunOp(op, dev, attrs);
  INFO(op << " on cuda: " << gpu.status());
  REQUIRE(gpu.ok());
  REQUIRE(gpu->size() == cpu->size());
  for (size_t i = 0; i < cpu->size(); ++i) {
    INFO(op << " output " << i << " " << (*cpu)[i].TypeString());
    REQUIRE((*gpu)[i].device().is_cuda());
    REQUIRE((*gpu)[i].sizes() == (*cpu)[i].sizes());
    KILN_REQUIRE_CLOSE((*gpu)[i].ToFloats(), (*cpu)[i].ToFloats(), tolerance);
  }
}

}  // namespace kiln::testing
