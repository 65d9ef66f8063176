// The CUDA runtime calls of the device runtime (kernels/cuda/cuda_runtime.cc), answered by the
// kernel emulation (Note [Kernel emulation] in cuda_emulation.h) so that the whole CUDA backend —
// allocator, streams, events, copies, kernels — runs on a machine without a GPU in tests. One
// emulated device, or KILN_EMULATED_DEVICES of them (for multi-rank NCCL on threads, nccl.cc); a
// thread's current device is its own. "Device" memory is host memory from the heap, one allocation
// per cudaMalloc (so AddressSanitizer bounds every segment), remembered so that
// cudaPointerGetAttributes can tell device from host pointers. Streams and events: streams.h (by
// default every call completes before it returns; Note [Deferred streams] for the queued mode).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/emulator_state.h"
#include "kernels/cuda/emulation/streams.h"

namespace kiln::kernels::cuda::emulation {
namespace {

constexpr size_t kDeviceAlign = 256;  // cudaMalloc's alignment
constexpr size_t kDeviceMemory = size_t{80} << 30;

struct Memory {
  std::mutex mu;
  struct Segment {
    size_t bytes;
    int device;
  };
  std::map<const char*, Segment> device;  // base -> segment
  size_t device_bytes = 0;
};

Memory& M() {
  static Memory* m = new Memory();
  return *m;
}

thread_local int current_device = 0;

}  // namespace

int DeviceOf(const void* p) {
  Memory& m = M();
  std::lock_guard<std::mutex> lock(m.mu);
  const char* c = static_cast<const char*>(p);
  auto it = m.device.upper_bound(c);
  if (it == m.device.begin()) return -1;
  --it;
  return c < it->first + it->second.bytes ? it->second.device : -1;
}

int DeviceCount() {
  static const int count = [] {
    const char* env = std::getenv("KILN_EMULATED_DEVICES");
    const int n = env == nullptr ? 1 : std::atoi(env);
    return n < 1 ? 1 : n > 8 ? 8 : n;
  }();
  return count;
}

}  // namespace kiln::kernels::cuda::emulation

namespace em = kiln::kernels::cuda::emulation;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = em::DeviceCount();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= em::DeviceCount()) return cudaErrorInvalidDevice;
  em::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = em::current_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= em::DeviceCount()) return cudaErrorInvalidDevice;
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "Kiln kernel emulation (host CPU, sm_90 limits)");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = em::kDeviceMemory;
  prop->multiProcessorCount = 132;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlock = 48 << 10;
  prop->sharedMemPerBlockOptin = 232448;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaDeviceSynchronize"); c != cudaSuccess)
    return c;
  em::DrainAllStreams();
  return em::DeferredStatus();
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaMalloc"); c != cudaSuccess) return c;
  em::Memory& m = em::M();
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.device_bytes + bytes > em::kDeviceMemory) return cudaErrorMemoryAllocation;
  char* p = static_cast<char*>(
      ::operator new[](bytes == 0 ? 1 : bytes, std::align_val_t{em::kDeviceAlign}, std::nothrow));
  if (p == nullptr) return cudaErrorMemoryAllocation;
  m.device[p] = em::Memory::Segment{bytes, em::current_device};
  m.device_bytes += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaFree"); c != cudaSuccess) return c;
  if (ptr == nullptr) return cudaSuccess;
  em::DrainAllStreams();  // as on a device, cudaFree waits for the work that may use the memory
  em::Memory& m = em::M();
  std::lock_guard<std::mutex> lock(m.mu);
  auto it = m.device.find(static_cast<const char*>(ptr));
  if (it == m.device.end()) return cudaErrorInvalidValue;
  m.device_bytes -= it->second.bytes;
  m.device.erase(it);
  ::operator delete[](ptr, std::align_val_t{em::kDeviceAlign});
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaHostAlloc"); c != cudaSuccess) return c;
  *ptr = std::malloc(bytes == 0 ? 1 : bytes);
  return *ptr == nullptr ? cudaErrorMemoryAllocation : cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaFreeHost"); c != cudaSuccess) return c;
  em::DrainAllStreams();
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attributes, const void* ptr) {
  std::memset(attributes, 0, sizeof(*attributes));
  const int owner = em::DeviceOf(ptr);
  const bool device = owner >= 0;
  attributes->type = device ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  attributes->device = device ? owner : em::current_device;
  attributes->devicePointer = device ? const_cast<void*>(ptr) : nullptr;
  attributes->hostPointer = device ? nullptr : const_cast<void*>(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind,
                            cudaStream_t stream) {
  if (count > 0) em::Enqueue(stream, [dst, src, count] { std::memmove(dst, src, count); });
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = em::CreateStream();
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  em::DestroyStream(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaStreamSynchronize"); c != cudaSuccess)
    return c;
  em::DrainStream(stream);
  return em::DeferredStatus();
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaStreamWaitEvent"); c != cudaSuccess)
    return c;
  em::StreamWaitEvent(stream, event);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = em::CreateEvent();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  em::DestroyEvent(event);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaEventRecord"); c != cudaSuccess) return c;
  em::RecordEvent(event, stream);
  return cudaSuccess;
}

// A query runs the event's work: a poll loop always makes progress.
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaEventQuery"); c != cudaSuccess) return c;
  em::DrainEvent(event);
  return em::DeferredStatus();
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaEventSynchronize"); c != cudaSuccess)
    return c;
  em::DrainEvent(event);
  return em::DeferredStatus();
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (mode != cudaStreamCaptureModeThreadLocal) return cudaErrorNotSupported;  // Kiln's mode only
  return em::BeginCapture(stream);
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  return em::EndCapture(stream, graph);
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return cudaErrorInvalidValue;
  *exec = em::InstantiateGraph(graph);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (const cudaError_t c = em::CheckNotCapturing("cudaGraphLaunch"); c != cudaSuccess) return c;
  em::LaunchGraph(exec, stream);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  em::DestroyGraph(graph);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  em::DestroyGraphExec(exec);
  return cudaSuccess;
}

}  // extern "C"
