// The emulated device's error state and launch limits, shared by the block scheduler
// (emulator.cc) and the emulated runtime calls (runtime.cc). Internal to the emulation.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace kiln::kernels::cuda::emulation {

// "" when the launch configuration is one a device accepts (Note [Kernel emulation]); otherwise
// the reason, also recorded as the error the next cudaGetLastError returns.
std::string CheckLaunchConfiguration(const void* kernel, dim3 grid, dim3 block,
                                     size_t dynamic_shared_bytes);

// A failure inside a kernel: sticky, as a fault leaves a CUDA context unusable (every later
// launch is skipped and cudaGetLastError keeps returning it) until ClearFailure.
void RecordStickyFailure(const std::string& what);
const std::string& StickyFailure();

// The number of emulated devices: KILN_EMULATED_DEVICES (1 to 8, default 1; read once). They
// share the host's memory; each thread has its own current device (cudaSetDevice).
int DeviceCount();
// The device whose cudaMalloc holds `p`, or -1 for host memory.
int DeviceOf(const void* p);

// An opaque handle (stream, event, cuBLASLt context) that is a valid, distinct pointer.
template <typename Handle>
Handle NewHandle() {
  return reinterpret_cast<Handle>(new char[1]);
}
template <typename Handle>
void DeleteHandle(Handle handle) {
  delete[] reinterpret_cast<char*>(handle);
}

}  // namespace kiln::kernels::cuda::emulation
