// Tensor's device paths (Note [Device tensors through the host]) on the CPU alone: a fake CUDA
// runtime whose "device memory" is host memory that only the runtime's Copy and Memset touch, and
// whose allocator registers the pinned-host allocator on first use (as the real backend does).
// Checks zero-fill, contiguous and strided copies in both directions with dtype conversion,
// Fill, ToFloats, Clone and the availability check, without a GPU.
#include "engine/core/allocator.h"
#include "engine/core/device_runtime.h"
#include "engine/core/tensor.h"
#include "tests/engine/core/fake_device.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

FakeRuntime* g_runtime = nullptr;

void Install() { g_runtime = InstallFakeCuda(); }

TEST_CASE("device tensors are zero-filled and copy contiguously through the runtime", "[device]") {
  Install();
  REQUIRE(CheckDeviceAvailable(Device::CUDA(0)).ok());
  REQUIRE_FALSE(CheckDeviceAvailable(Device::CUDA(1)).ok());
  const Tensor d = Tensor::Zeros({3, 4}, DType::kF32, Device::CUDA(0));
  REQUIRE(g_runtime->memsets >= 1);
  REQUIRE(d.ToFloats() == std::vector<float>(12, 0.0f));
  const Tensor h = Tensor::FromFloats({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const int before = g_runtime->copies;
  d.CopyFrom(h);
  REQUIRE(g_runtime->copies == before + 1);  // one runtime copy, no staging
  REQUIRE(d.ToFloats() == h.ToFloats());
  REQUIRE(d.Clone().device() == Device::CUDA(0));
  REQUIRE(d.Clone().ToFloats() == h.ToFloats());
}

TEST_CASE("strided and converting device copies stage through the host", "[device]") {
  Install();
  const Tensor h = Tensor::FromFloats({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const Tensor d = Tensor::Zeros({3, 4}, DType::kF32, Device::CUDA(0));
  d.CopyFrom(h);
  // Device transpose to host, and host transpose into a device bf16 tensor.
  REQUIRE(d.Transpose(0, 1).ToFloats() == h.Transpose(0, 1).ToFloats());
  const Tensor bf = Tensor::Zeros({4, 3}, DType::kBF16, Device::CUDA(0));
  bf.CopyFrom(h.Transpose(0, 1));
  REQUIRE(bf.ToFloats() == h.Transpose(0, 1).ToFloats());
  // Writing a strided device view keeps the elements between its strides.
  d.Slice(1, 1, 3).Fill(-1.0f);
  REQUIRE(d.ToFloats() == std::vector<float>{0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11});
  d.Slice(1, 0, 1).Fill(0.0f);
  REQUIRE(d.ToFloats() == std::vector<float>{0, -1, -1, 3, 0, -1, -1, 7, 0, -1, -1, 11});
  // Device to device with conversion.
  const Tensor back = Tensor::Zeros({3, 4}, DType::kF16, Device::CUDA(0));
  back.CopyFrom(d);
  REQUIRE(back.ToFloats() == d.ToFloats());
  REQUIRE(GetAllocator(Device::CUDA(0))->name() == "fake-cuda");
  REQUIRE(GetAllocator(Device::CUDA(1)) == nullptr);
}

}  // namespace
}  // namespace kiln::testing
