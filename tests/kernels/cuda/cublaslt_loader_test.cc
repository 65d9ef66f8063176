// cuBLASLt is opened on first use, not at start-up (Note [Loading cuBLASLt on first use] in
// kernels/cuda/cublaslt_loader.cc): a process that links the CUDA backend has no libcublasLt
// mapped until a cuBLASLt entry point runs; the first call maps it and answers from the real
// library. When the library cannot be opened, the entry points refuse with the loader's reason.
// Needs no GPU (these cuBLASLt calls touch no device). Two binaries run these cases (BUILD): each
// case needs a process in which nothing has called cuBLASLt yet.
#include <cstdlib>
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

TEST_CASE("libcublasLt is mapped on the first cuBLASLt call, not at start-up",
          "[cuda][host][first_use]") {
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

// Run with KILN_CUBLASLT_LIBRARY naming a file that does not exist.
TEST_CASE("a cuBLASLt that cannot be loaded makes every call refuse with the reason",
          "[cuda][host][missing]") {
  const char* chosen = std::getenv("KILN_CUBLASLT_LIBRARY");
  if (chosen == nullptr || std::string(chosen) != "/nonexistent/libcublasLt.so") {
    KILN_SKIP("needs KILN_CUBLASLT_LIBRARY=/nonexistent/libcublasLt.so (cublaslt_missing_test)");
  }
#if !defined(KILN_EXPECT_NOCUDA)
  cublasLtHandle_t handle = nullptr;
  REQUIRE(cublasLtCreate(&handle) == CUBLAS_STATUS_NOT_INITIALIZED);
  cublasLtMatmulDesc_t desc = nullptr;
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ==
          CUBLAS_STATUS_NOT_INITIALIZED);
  const std::string reason = cublasLtGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);
  INFO(reason);
  REQUIRE(reason.rfind("cuBLASLt could not be loaded (KILN_CUBLASLT_LIBRARY): ", 0) == 0);
  REQUIRE(reason.find("/nonexistent/libcublasLt.so") != std::string::npos);
#endif
  REQUIRE_FALSE(CublasLtMapped());
}

}  // namespace
}  // namespace kiln::testing
