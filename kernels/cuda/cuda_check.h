// Checking macros for CUDA runtime calls (host code and .cu files alike): a failed call aborts
// with the file, the line, the call and the runtime's message. See Note [Status vs CHECK]: a CUDA
// error inside a step is a broken contract or a dead device, not an input error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

namespace kiln::kernels::cuda {

[[noreturn]] inline void CudaCallFailed(const char* library, const char* message, const char* file,
                                        int line, const char* call) {
  std::fprintf(stderr, "%s:%d: %s call failed: %s\n  %s\n", file, line, library, message, call);
  std::fflush(stderr);
  std::abort();
}

}  // namespace kiln::kernels::cuda

#define KILN_CUDA_CHECK(call)                                                             \
  do {                                                                                    \
    const cudaError_t kiln_cuda_error_ = (call);                                          \
    if (kiln_cuda_error_ != cudaSuccess) {                                                \
      ::kiln::kernels::cuda::CudaCallFailed("CUDA", cudaGetErrorString(kiln_cuda_error_), \
                                            __FILE__, __LINE__, #call);                   \
    }                                                                                     \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, with the launch's location.
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())
