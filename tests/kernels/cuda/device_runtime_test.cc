// Host-side tests of the CUDA backend's start-up behaviour (these run without a GPU): the runtime
// registers itself without touching the driver, reports the driver's reason when no device can
// be used, refuses allocators for devices it does not have, and — in a --config=nocuda build —
// says the binary was built without CUDA. With a device present the availability checks flip.
#include "engine/core/device_runtime.h"

#include "engine/core/allocator.h"
#include "engine/core/tensor.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("the CUDA runtime is registered and explains unavailability in one line",
          "[cuda][host]") {
  DeviceRuntime* runtime = GetDeviceRuntime(DeviceType::kCUDA);
  REQUIRE(runtime != nullptr);
  const absl::Status status = CheckDeviceAvailable(Device::CUDA(0));
#if defined(KILN_EXPECT_NOCUDA)
  REQUIRE_FALSE(status.ok());
  REQUIRE(status.message() ==
          "no CUDA device available: this binary was built without CUDA (--config=nocuda)");
  REQUIRE(runtime->DeviceCount() == 0);
#else
  if (status.ok()) {
    REQUIRE(runtime->DeviceCount() >= 1);
    REQUIRE_FALSE(runtime->DeviceName(0).empty());
    REQUIRE_FALSE(CheckDeviceAvailable(Device::CUDA(runtime->DeviceCount())).ok());
    return;
  }
  INFO(status.message());
  REQUIRE(status.code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(status.message().rfind("no CUDA device available: ", 0) == 0);
  REQUIRE(status.message().size() > std::string("no CUDA device available: ").size());
  REQUIRE(status.message().find('\n') == std::string::npos);
  REQUIRE(runtime->DeviceCount() == 0);
#endif
}

TEST_CASE("without a device there is no CUDA allocator and the CPU is unaffected", "[cuda][host]") {
  if (CheckDeviceAvailable(Device::CUDA(0)).ok()) {
    REQUIRE(GetAllocator(Device::CUDA(0)) != nullptr);
    REQUIRE(GetAllocator(Device::CUDA(0))->device() == Device::CUDA(0));
    return;
  }
  REQUIRE(GetAllocator(Device::CUDA(0)) == nullptr);
  REQUIRE(CheckDeviceAvailable(Device::CPU()).ok());
  const Tensor t = Tensor::FromFloats({1, 2, 3}, {3});
  REQUIRE(t.Clone().ToFloats() == std::vector<float>{1, 2, 3});
  // The pinned-host allocator stays the CPU one (CUDA replaces it only when a device exists).
  REQUIRE(GetPinnedHostAllocator()->name() == "pinned-host");
}

TEST_CASE("a device index past the device count is refused", "[cuda][host]") {
  const absl::Status status = CheckDeviceAvailable(Device::CUDA(64));
  REQUIRE_FALSE(status.ok());
  REQUIRE(status.message().rfind("no CUDA device available: ", 0) == 0);
}

}  // namespace
}  // namespace kiln::testing
