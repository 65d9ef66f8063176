// Element types a tensor can hold, their sizes and names, and the C++ type each maps to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/core/half.h"

namespace kiln {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8 };

constexpr int kNumDTypes = 6;

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);  // "f32", "bf16", ...
absl::StatusOr<DType> ParseDType(std::string_view name);
bool IsFloating(DType dtype);
inline std::ostream& operator<<(std::ostream& os, DType d) { return os << DTypeName(d); }

// Maps a C++ element type to its DType at compile time.
template <typename T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::kBF16; };
template <> struct DTypeOf<Float16> { static constexpr DType value = DType::kF16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kI32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kI64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kU8; };

// Calls fn(T{}) with T the C++ type of a floating dtype (f32, bf16, f16).
template <typename Fn>
decltype(auto) DispatchFloating(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kBF16: return fn(BFloat16{});
    case DType::kF16: return fn(Float16{});
    default: return fn(float{});
  }
}

}  // namespace kiln
