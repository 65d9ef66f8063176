// Reduction kernels: plain loops the compiler vectorizes (f32, integers) and the f32-compute loops
// for bf16/f16 (Note [16-bit reduction]).
#include "engine/dist/reduce.h"

#include <cmath>

#include "engine/core/half.h"
#include "engine/core/status.h"

namespace kiln::dist {
namespace {

template <typename T>
void SumLoop(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void MaxLoop(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] >= b[i] ? a[i] : b[i];
}

// Float max that propagates NaN from either side.
inline float MaxNan(float x, float y) {
  if (std::isnan(x)) return x;
  if (std::isnan(y)) return y;
  return x >= y ? x : y;
}

template <>
void MaxLoop<float>(float* out, const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = MaxNan(a[i], b[i]);
}

// bf16 / f16: widen, combine in f32, round back.
template <typename Half, typename Combine>
void HalfLoop(void* out, const void* a, const void* b, size_t n, Combine combine) {
  const auto* x = static_cast<const Half*>(a);
  const auto* y = static_cast<const Half*>(b);
  auto* z = static_cast<Half*>(out);
  for (size_t i = 0; i < n; ++i) {
    z[i].bits = Half::FromFloat(combine(Half::ToFloat(x[i].bits), Half::ToFloat(y[i].bits)));
  }
}

template <typename Half>
void HalfReduce(ReduceOp op, void* out, const void* a, const void* b, size_t n) {
  if (op == ReduceOp::kMax) {
    HalfLoop<Half>(out, a, b, n, MaxNan);
  } else {
    HalfLoop<Half>(out, a, b, n, [](float x, float y) { return x + y; });
  }
}

template <typename T>
void NativeReduce(ReduceOp op, void* out, const void* a, const void* b, size_t n) {
  if (op == ReduceOp::kMax) {
    MaxLoop(static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n);
  } else {
    SumLoop(static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n);
  }
}

}  // namespace

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

bool IsReducibleDType(DType dtype) { return dtype != DType::kU8; }

void ReduceArrays(DType dtype, ReduceOp op, void* out, const void* a, const void* b, size_t n) {
  KILN_CHECK(op != ReduceOp::kAvg) << "kAvg is a sum followed by DivideInPlace";
  switch (dtype) {
    case DType::kF32:
      return NativeReduce<float>(op, out, a, b, n);
    case DType::kBF16:
      return HalfReduce<BFloat16>(op, out, a, b, n);
    case DType::kF16:
      return HalfReduce<Float16>(op, out, a, b, n);
    case DType::kI32:
      return NativeReduce<int32_t>(op, out, a, b, n);
    case DType::kI64:
      return NativeReduce<int64_t>(op, out, a, b, n);
    case DType::kU8:
      break;
  }
  KILN_CHECK(false) << "no reduction for " << dtype;
}

void DivideInPlace(DType dtype, void* x, size_t n, int divisor) {
  const float d = static_cast<float>(divisor);
  switch (dtype) {
    case DType::kF32: {
      auto* v = static_cast<float*>(x);
      for (size_t i = 0; i < n; ++i) v[i] = v[i] / d;
      return;
    }
    case DType::kBF16:
      HalfLoop<BFloat16>(x, x, x, n, [d](float v, float) { return v / d; });
      return;
    case DType::kF16:
      HalfLoop<Float16>(x, x, x, n, [d](float v, float) { return v / d; });
      return;
    default:
      break;
  }
  KILN_CHECK(false) << "average of " << dtype << " is not defined";
}

}  // namespace kiln::dist
