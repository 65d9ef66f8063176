// Every kernel the CPU backend registers has a CUDA twin for the same (op, dtype) (issue: "kernels
// for every op the CPU backend has"). Host-only: kernels register at static initialization, no
// device needed.
#include <string>
#include <vector>

#include "engine/core/kernel.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("every CPU kernel has a CUDA kernel for the same op and dtype", "[cuda][host]") {
#if defined(KILN_EXPECT_NOCUDA)
  KILN_SKIP("built without CUDA (--config=nocuda): no CUDA kernels to check");
#endif
  const KernelRegistry& registry = KernelRegistry::Global();
  std::vector<std::string> missing;
  int checked = 0;
  for (const std::string& op : registry.OpsOn(DeviceType::kCPU)) {
    for (DType dtype : registry.DTypesFor(op, DeviceType::kCPU)) {
      ++checked;
      if (registry.Find(op, DeviceType::kCUDA, dtype) == nullptr) {
        missing.push_back(op + " " + std::string(DTypeName(dtype)));
      }
    }
  }
  REQUIRE(checked > 50);
  std::string listed;
  for (const std::string& m : missing) listed += "\n  no CUDA kernel: " + m;
  INFO(checked << " (op, dtype) pairs on the CPU" << listed);
  REQUIRE(missing.empty());
}

}  // namespace
}  // namespace kiln::testing
