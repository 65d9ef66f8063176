// Tests of the tensor runtime: views share storage, strided copies and casts, allocator statistics,
// 16-bit float conversions.
#include "engine/core/tensor.h"

#include <cmath>
#include <cstring>

#include "engine/core/allocator.h"
#include "engine/core/parallel.h"
#include "tests/testing.h"

namespace kiln {
namespace {

TEST_CASE("views share storage and see writes", "[core]") {
  Tensor t = Tensor::FromFloats({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.View({3, 2});
  Tensor tr = t.Transpose(0, 1);
  Tensor s = t.Slice(1, 1, 3);
  REQUIRE(v.storage().data() == t.storage().data());
  REQUIRE_FALSE(tr.is_contiguous());
  REQUIRE(tr.sizes() == Shape{3, 2});
  REQUIRE(tr.ToFloats() == std::vector<float>{0, 3, 1, 4, 2, 5});
  REQUIRE(s.ToFloats() == std::vector<float>{1, 2, 4, 5});
  t.data<float>()[4] = 40;
  REQUIRE(v.ToFloats()[4] == 40);
  REQUIRE(s.ToFloats() == std::vector<float>{1, 2, 40, 5});
  REQUIRE(tr.Contiguous().is_contiguous());
  REQUIRE(t.View({-1}).sizes() == Shape{6});
}

TEST_CASE("casts round to nearest even", "[core]") {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  REQUIRE(static_cast<float>(BFloat16(1.0f + 1.0f / 256)) == 1.0f);
  REQUIRE(static_cast<float>(BFloat16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
  REQUIRE(std::isnan(static_cast<float>(BFloat16(NAN))));
  REQUIRE(static_cast<float>(Float16(65504.0f)) == 65504.0f);
  REQUIRE(std::isinf(static_cast<float>(Float16(65520.0f))));
  REQUIRE(static_cast<float>(Float16(1.0f + 1.0f / 2048)) == 1.0f);
  REQUIRE(static_cast<float>(Float16(5.9604645e-8f)) == 5.9604645e-8f);  // smallest subnormal
  // Every f16 bit pattern survives a round trip through float.
  int mismatches = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float f = Float16::ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    if (Float16::FromFloat(f) != bits) ++mismatches;
  }
  REQUIRE(mismatches == 0);
  Tensor t = Tensor::FromFloats({1.5f, -2.25f, 3.0f}, {3});
  REQUIRE(t.To(DType::kBF16).To(DType::kF16).ToFloats() == t.ToFloats());
}

TEST_CASE("allocator tracks current and peak bytes", "[core]") {
  Allocator* a = GetAllocator(Device::CPU());
  a->ResetPeak();
  const AllocatorStats before = a->Stats();
  {
    Tensor big = Tensor::Zeros({1024, 1024}, DType::kF32);
    REQUIRE(reinterpret_cast<uintptr_t>(big.raw_data()) % Allocator::kAlignment == 0);
    REQUIRE(a->Stats().current_bytes == before.current_bytes + 4 * 1024 * 1024);
  }
  const AllocatorStats after = a->Stats();
  REQUIRE(after.current_bytes == before.current_bytes);
  REQUIRE(after.peak_bytes >= before.current_bytes + 4 * 1024 * 1024);
}

TEST_CASE("thread count is set per process", "[core]") {
  SetNumThreads(1);
  REQUIRE(NumThreads() == 1);
  int64_t total = 0;
  ParallelFor(1000, 10, [&](int64_t b, int64_t e) { total += e - b; });
  REQUIRE(total == 1000);
  SetNumThreads(0);
  REQUIRE(NumThreads() == HardwareThreads());
}

}  // namespace
}  // namespace kiln
