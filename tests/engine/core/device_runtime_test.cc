// The device-runtime registry of engine/core without any GPU backend linked: the CPU is always
// available, and asking for a CUDA device says that no backend was linked (one line).
#include "engine/core/device_runtime.h"

#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("without a GPU backend, cuda is refused with a reason and cpu is available", "[device]") {
  REQUIRE(CheckDeviceAvailable(Device::CPU()).ok());
  REQUIRE(GetDeviceRuntime(DeviceType::kCUDA) == nullptr);
  const absl::Status status = CheckDeviceAvailable(Device::CUDA(0));
  REQUIRE(status.code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(status.message() ==
          "no CUDA device available: this program was linked without the CUDA backend");
}

}  // namespace
}  // namespace kiln::testing
