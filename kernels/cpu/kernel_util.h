// Helpers the CPU kernel registrations share: viewing a tensor as (rows, last axis), contract
// checks with readable messages, and sizing per-thread scratch. Registration side only (no ISA
// flags); the bodies see plain pointers (isa_api.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/core/kernel.h"
#include "engine/core/status.h"
#include "engine/core/tensor.h"

namespace kiln::kernels::cpu {

// Length of the last axis (1 for a 0-d tensor).
inline int64_t LastDim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }
// numel / last axis: the rows of t viewed as a matrix.
inline int64_t Rows(const Tensor& t) {
  const int64_t c = LastDim(t);
  return c == 0 ? 0 : t.numel() / c;
}

// Aborts (a plan bound the wrong tensors) unless t is a contiguous CPU tensor of `dtype`.
inline void CheckTensor(const Tensor& t, DType dtype, std::string_view what) {
  KILN_CHECK(t.defined() && t.device().is_cpu() && t.is_contiguous())
      << what << " must be a contiguous CPU tensor";
  KILN_CHECK(t.dtype() == dtype) << what << " is " << t.dtype() << ", expected " << dtype;
}

inline void CheckSameShape(const Tensor& a, const Tensor& b, std::string_view what) {
  KILN_CHECK(a.sizes() == b.sizes())
      << what << ": " << ShapeToString(a.sizes()) << " vs " << ShapeToString(b.sizes());
}

}  // namespace kiln::kernels::cpu
