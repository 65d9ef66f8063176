// cuBLASLt is opened on first use, not at start-up (Note [Loading cuBLASLt on first use] in
// kernels/cuda/cublaslt_loader.cc): a process that links the CUDA backend has no libcublasLt
// mapped until a cuBLASLt entry point runs; the first call maps it and answers from the real
// library. Needs no GPU (cublasLtGetStatusString touches no device).
#include <fstream>
#include <string>

#include "tests/testing.h"

#if !defined(KILN_EXPECT_NOCUDA)
#include <cublasLt.h>
#endif

namespace kiln::testing {
namespace {

bool CublasLtMapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libcublasLt") != std::string::npos) return true;
  }
  return false;
}

TEST_CASE("libcublasLt is mapped on the first cuBLASLt call, not at start-up", "[cuda][host]") {
  REQUIRE_FALSE(CublasLtMapped());
#if !defined(KILN_EXPECT_NOCUDA)
  // The real library's text (e.g. "the requested functionality is not supported"), not the
  // loader's "cuBLASLt could not be loaded: ..." message.
  const std::string text = cublasLtGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED);
  INFO(text);
  REQUIRE_FALSE(text.empty());
  REQUIRE(text.find("could not be loaded") == std::string::npos);
  REQUIRE(CublasLtMapped());
#endif
}

}  // namespace
}  // namespace kiln::testing
