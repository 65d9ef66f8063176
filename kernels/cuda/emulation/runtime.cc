// The CUDA runtime calls that the .cu files make, answered by the kernel emulation (Note [Kernel
// emulation] in cuda_emulation.h) in place of libcudart: errors, the device's attributes (those
// of a Hopper GPU, sm_90, whose limits the launches are checked against), per-kernel dynamic
// shared memory, and memset (on its stream: streams.h).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/emulator_state.h"
#include "kernels/cuda/emulation/streams.h"

namespace kiln::kernels::cuda::emulation {
namespace {

constexpr int kDefaultDynamicShared = 48 << 10;
constexpr int kOptInDynamicShared = 232448;  // 227 KiB, sm_90
constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridYZ = 65535;

// Per host thread, as CUDA's last error is (ranks on threads each see their own).
struct ErrorState {
  cudaError_t last = cudaSuccess;  // cleared by cudaGetLastError
  std::string sticky;              // a failure inside a kernel
  std::string last_failure;        // what LastFailure reports
};

ErrorState& E() {
  thread_local ErrorState e;
  return e;
}

// Per kernel, for every thread (cudaFuncSetAttribute).
struct SharedMemoryLimits {
  std::mutex mu;
  std::map<const void*, int> bytes;
};

SharedMemoryLimits& Limits() {
  static SharedMemoryLimits* limits = new SharedMemoryLimits();
  return *limits;
}

// Also printed: a test that aborts on the error (KILN_CUDA_CHECK_LAUNCH) shows what failed.
void Record(cudaError_t error, const std::string& what) {
  E().last = error;
  E().last_failure = what;
  std::fprintf(stderr, "kernel emulation: %s\n", what.c_str());
}

}  // namespace

std::string CheckLaunchConfiguration(const void* kernel, dim3 grid, dim3 block,
                                     size_t dynamic_shared_bytes) {
  std::string refused;
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) {
    refused = "an empty grid or block";
  } else if (threads > kMaxThreadsPerBlock || block.z > 64) {
    refused = "more than 1024 threads per block (or block.z > 64)";
  } else if (grid.x > 0x7fffffffu || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ) {
    refused = "grid dimensions over the limits (x < 2^31, y and z <= 65535)";
  } else {
    int limit = kDefaultDynamicShared;
    {
      std::lock_guard<std::mutex> lock(Limits().mu);
      auto it = Limits().bytes.find(kernel);
      if (it != Limits().bytes.end()) limit = it->second;
    }
    if (dynamic_shared_bytes > static_cast<size_t>(std::max(limit, kDefaultDynamicShared))) {
      refused = std::to_string(dynamic_shared_bytes) +
                " bytes of dynamic shared memory, over the kernel's limit of " +
                std::to_string(std::max(limit, kDefaultDynamicShared)) +
                " (raise it with cudaFuncSetAttribute)";
    }
  }
  if (!refused.empty()) {
    Record(cudaErrorInvalidConfiguration, "launch refused: " + refused);
  }
  return refused;
}

void RecordStickyFailure(const std::string& what) {
  E().sticky = what;
  Record(cudaErrorLaunchFailure, what);
  RecordDeferredFailure(what);  // the work may have run on another thread than its issuer's
}

const std::string& StickyFailure() { return E().sticky; }

std::string LastFailure() {
  return E().last_failure.empty() ? DeferredFailure() : E().last_failure;
}

void ClearFailure() {
  E().last = cudaSuccess;
  E().sticky.clear();
  E().last_failure.clear();
  ClearDeferredFailure();
}

}  // namespace kiln::kernels::cuda::emulation

namespace em = kiln::kernels::cuda::emulation;

extern "C" {

cudaError_t cudaGetLastError(void) {
  em::ErrorState& e = em::E();
  if (!e.sticky.empty() || !em::DeferredFailure().empty()) return cudaErrorLaunchFailure;
  const cudaError_t last = e.last;
  e.last = cudaSuccess;
  return last;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error (emulated)";
    case cudaErrorInvalidValue:
      return "invalid argument (emulated)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (emulated)";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (emulated; see LastFailure)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing (emulated)";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture (emulated)";
    default:
      return "unknown error (emulated)";
  }
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= em::DeviceCount()) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = em::kOptInDynamicShared;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = em::kDefaultDynamicShared;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = em::kMaxThreadsPerBlock;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    default:
      return cudaErrorInvalidValue;  // not emulated: a new query shows up here
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > em::kOptInDynamicShared) {
    em::Record(cudaErrorInvalidValue, "cudaFuncSetAttribute refused");
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(em::Limits().mu);
  em::Limits().bytes[func] = value;
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  em::Enqueue(stream, [ptr, value, count] { std::memset(ptr, value, count); });
  return cudaSuccess;
}

}  // extern "C"
