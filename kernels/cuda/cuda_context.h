// What the CUDA kernel registrations share: the device's compute stream, the caching allocator of a
// device (statistics for tests and benchmarks), the DType -> FloatType mapping, and contract checks
// for bound device tensors. Host code of the CUDA build only.
#pragma once

#include <string_view>

#include "engine/core/kernel.h"
#include "engine/core/tensor.h"
#include "kernels/common/contracts.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/launch.h"

namespace kiln::kernels::cuda {

static_assert(static_cast<int>(DType::kF32) == static_cast<int>(FloatType::kF32) &&
                  static_cast<int>(DType::kBF16) == static_cast<int>(FloatType::kBF16) &&
                  static_cast<int>(DType::kF16) == static_cast<int>(FloatType::kF16),
              "FloatType mirrors DType");

inline FloatType ToFloatType(DType dtype) {
  KILN_CHECK(IsFloating(dtype)) << "a CUDA kernel was bound to " << dtype;
  return static_cast<FloatType>(dtype);
}

// The compute stream of `device` (a cudaStream_t): kernels of every node launch on it.
StreamPtr ComputeStreamFor(Device device);
// Makes `device` current on this thread (kernels launch on the current device).
void SetCurrentDevice(Device device);
// Makes t's device current and returns its compute stream: the prologue of every kernel's Run.
inline StreamPtr LaunchStreamFor(const Tensor& t) {
  SetCurrentDevice(t.device());
  return ComputeStreamFor(t.device());
}

// The caching allocator behind GetAllocator(Device::CUDA(index)) (null when unavailable).
CachingAllocator* DeviceCachingAllocator(int index);

using kernels::CheckSameShape;
using kernels::LastDim;
using kernels::Rows;

// Aborts (a plan bound the wrong tensors) unless t is a contiguous CUDA tensor of `dtype`.
inline void CheckTensor(const Tensor& t, DType dtype, std::string_view what) {
  CheckTensorOn(t, DeviceType::kCUDA, dtype, what);
}

}  // namespace kiln::kernels::cuda
