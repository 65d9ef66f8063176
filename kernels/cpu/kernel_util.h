// Helpers the CPU kernel registrations share: the contract checks of kernels/common on the CPU
// device. Registration side only (no ISA flags); the bodies see plain pointers (isa_api.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/core/kernel.h"
#include "engine/core/status.h"
#include "engine/core/tensor.h"
#include "kernels/common/contracts.h"

namespace kiln::kernels::cpu {

using kernels::CheckSameShape;
using kernels::LastDim;
using kernels::Rows;

// Aborts (a plan bound the wrong tensors) unless t is a contiguous CPU tensor of `dtype`.
inline void CheckTensor(const Tensor& t, DType dtype, std::string_view what) {
  CheckTensorOn(t, DeviceType::kCPU, dtype, what);
}

}  // namespace kiln::kernels::cpu
