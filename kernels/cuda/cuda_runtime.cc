// The CUDA implementation of engine/core's DeviceRuntime, the caching device allocator and the
// pinned-host allocator, registered at start-up. Nothing touches the driver until first use, so a
// binary with the CUDA backend starts on a machine without a GPU and reports why when asked.
#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/allocator.h"
#include "engine/core/device_runtime.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {
namespace {

class ScopedDevice {
 public:
  explicit ScopedDevice(int index) {
    KILN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != index) KILN_CUDA_CHECK(cudaSetDevice(index));
    index_ = index;
  }
  ~ScopedDevice() {
    if (previous_ != index_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0, index_ = 0;
};

// The driver side of the caching allocator.
class CudaDeviceMemory : public DeviceMemoryProvider {
 public:
  explicit CudaDeviceMemory(int index) : index_(index) {}
  void* Malloc(size_t bytes) override {
    ScopedDevice scoped(index_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error so the retry can proceed
      return nullptr;
    }
    KILN_CUDA_CHECK(err);
    return p;
  }
  void Free(void* ptr) override {
    ScopedDevice scoped(index_);
    KILN_CUDA_CHECK(cudaFree(ptr));
  }
  void* RecordEvent(void* stream) override {
    ScopedDevice scoped(index_);
    cudaEvent_t e;
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    KILN_CUDA_CHECK(cudaEventRecord(e, static_cast<cudaStream_t>(stream)));
    return e;
  }
  bool EventDone(void* event) override {
    const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (err == cudaErrorNotReady) return false;
    KILN_CUDA_CHECK(err);
    return true;
  }
  void DestroyEvent(void* event) override {
    KILN_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
  }
  void Synchronize() override {
    ScopedDevice scoped(index_);
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  int index_;
};

// Per device: its compute stream and its caching allocator, created on first use.
struct DeviceState {
  int index = 0;
  cudaStream_t compute = nullptr;
  std::unique_ptr<CudaDeviceMemory> memory;
  std::unique_ptr<CachingAllocator> cache;
  std::unique_ptr<Allocator> allocator;
};

class CudaCachingDeviceAllocator : public Allocator {
 public:
  explicit CudaCachingDeviceAllocator(DeviceState* state) : state_(state) {}
  void* Allocate(size_t bytes) override {
    void* p = state_->cache->Allocate(bytes, state_->compute);
    if (p == nullptr) {
      std::fprintf(stderr, "cuda:%d: %s\n", state_->index,
                   state_->cache->last_oom_message().c_str());
    }
    return p;
  }
  void Deallocate(void* ptr, size_t) override { state_->cache->Free(ptr); }
  void ReleaseCache() override { state_->cache->EmptyCache(); }
  Device device() const override { return Device::CUDA(state_->index); }
  std::string name() const override { return absl::StrCat("cuda-caching:", state_->index); }
  AllocatorStats Stats() const override {
    const CachingAllocatorStats s = state_->cache->Stats();
    AllocatorStats out;
    out.current_bytes = s.allocated_bytes;
    out.peak_bytes = s.peak_allocated_bytes;
    out.reserved_bytes = s.reserved_bytes;
    out.num_allocs = s.num_allocs;
    out.num_frees = s.num_frees;
    return out;
  }
  void ResetPeak() override { state_->cache->ResetPeak(); }

 private:
  DeviceState* state_;
};

// Page-locked host memory from cudaHostAlloc (portable: usable with every device).
class CudaPinnedHostAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    stats_.OnAlloc(static_cast<int64_t>(bytes));
    return p;
  }
  void Deallocate(void* ptr, size_t bytes) override {
    if (ptr == nullptr) return;
    KILN_CUDA_CHECK(cudaFreeHost(ptr));
    stats_.OnFree(static_cast<int64_t>(bytes));
  }
  Device device() const override { return Device::CPU(); }
  std::string name() const override { return "cuda-pinned-host"; }
  AllocatorStats Stats() const override { return stats_.Snapshot(); }
  void ResetPeak() override { stats_.ResetPeak(); }

 private:
  StatsTracker stats_;
};

bool IsDevicePointer(const void* p) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

class CudaDeviceRuntime : public DeviceRuntime {
 public:
  absl::Status Available() override {
    std::call_once(probe_once_, [this] { Probe(); });
    return available_;
  }
  int DeviceCount() override { return Available().ok() ? static_cast<int>(devices_.size()) : 0; }
  std::string DeviceName(int index) override {
    if (!Available().ok() || index < 0 || index >= DeviceCount()) return "";
    cudaDeviceProp prop;
    KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    return prop.name;
  }

  void Copy(void* dst, const void* src, size_t bytes, Device device) override {
    if (bytes == 0) return;
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s.compute));
    if (!IsDevicePointer(dst) || !IsDevicePointer(src)) {
      KILN_CUDA_CHECK(cudaStreamSynchronize(s.compute));
    }
  }
  void CopyAsync(void* dst, const void* src, size_t bytes, Device device) override {
    if (bytes == 0) return;
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s.compute));
  }
  void Memset(void* dst, int value, size_t bytes, Device device) override {
    if (bytes == 0) return;
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    KILN_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, s.compute));
  }
  void Synchronize(Device device) override {
    ScopedDevice scoped(State(device).index);
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }
  StreamHandle ComputeStream(Device device) override { return State(device).compute; }
  StreamHandle CreateStream(Device device) override {
    ScopedDevice scoped(State(device).index);
    cudaStream_t s;
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  void DestroyStream(Device device, StreamHandle stream) override {
    ScopedDevice scoped(State(device).index);
    KILN_CUDA_CHECK(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
  }
  void SynchronizeStream(Device device, StreamHandle stream) override {
    KILN_CUDA_CHECK(cudaStreamSynchronize(Resolve(device, stream)));
  }
  EventHandle CreateEvent(Device device) override {
    ScopedDevice scoped(State(device).index);
    cudaEvent_t e;
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void DestroyEvent(Device, EventHandle event) override {
    KILN_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
  }
  void RecordEvent(Device device, EventHandle event, StreamHandle stream) override {
    KILN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), Resolve(device, stream)));
  }
  void StreamWaitEvent(Device device, StreamHandle stream, EventHandle event) override {
    KILN_CUDA_CHECK(
        cudaStreamWaitEvent(Resolve(device, stream), static_cast<cudaEvent_t>(event), 0));
  }
  bool EventDone(Device, EventHandle event) override {
    const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (err == cudaErrorNotReady) return false;
    KILN_CUDA_CHECK(err);
    return true;
  }
  void SynchronizeEvent(Device, EventHandle event) override {
    KILN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }

  bool BeginCapture(Device device) override {
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    // Thread-local mode: only this thread's unsafe calls (allocation, waits) break the capture.
    return cudaStreamBeginCapture(s.compute, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  }
  GraphHandle EndCapture(Device device, std::string* why) override {
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    cudaGraph_t graph = nullptr;
    cudaError_t err = cudaStreamEndCapture(s.compute, &graph);
    cudaGraphExec_t exec = nullptr;
    if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // the capture's error is not the next kernel's
      *why = cudaGetErrorString(err);
      return nullptr;
    }
    return exec;
  }
  void LaunchGraph(Device device, GraphHandle graph) override {
    DeviceState& s = State(device);
    ScopedDevice scoped(s.index);
    KILN_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), s.compute));
  }
  void DestroyGraph(Device device, GraphHandle graph) override {
    ScopedDevice scoped(State(device).index);
    KILN_CUDA_CHECK(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)));
  }

  // The state of a device that exists (aborts otherwise: callers checked availability).
  DeviceState& State(Device device) {
    const absl::Status ok = CheckDeviceAvailable(device);
    KILN_CHECK(ok.ok()) << ok.message();
    DeviceState& s = *devices_[device.index];
    std::call_once(s_once_[device.index], [&] {
      ScopedDevice scoped(device.index);
      KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s.compute, cudaStreamNonBlocking));
      s.memory = std::make_unique<CudaDeviceMemory>(device.index);
      s.cache = std::make_unique<CachingAllocator>(s.memory.get());
      s.allocator = std::make_unique<CudaCachingDeviceAllocator>(&s);
    });
    return s;
  }

 private:
  void Probe() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      available_ = absl::UnavailableError(cudaGetErrorString(err));
      return;
    }
    if (count == 0) {
      available_ = absl::UnavailableError("no CUDA-capable device is detected");
      return;
    }
    for (int i = 0; i < count; ++i) {
      devices_.push_back(std::make_unique<DeviceState>());
      devices_.back()->index = i;
    }
    s_once_ = std::make_unique<std::once_flag[]>(count);
    // Note [Pinned staging]: with a device present, host staging buffers are page-locked by CUDA.
    SetPinnedHostAllocator(new CudaPinnedHostAllocator());
  }
  cudaStream_t Resolve(Device device, StreamHandle stream) {
    return stream != nullptr ? static_cast<cudaStream_t>(stream) : State(device).compute;
  }

  std::once_flag probe_once_;
  absl::Status available_;
  std::vector<std::unique_ptr<DeviceState>> devices_;
  std::unique_ptr<std::once_flag[]> s_once_;
};

CudaDeviceRuntime& Runtime() {
  static CudaDeviceRuntime* runtime = new CudaDeviceRuntime();
  return *runtime;
}

Allocator* MakeCudaAllocator(int index) {
  if (!CheckDeviceAvailable(Device::CUDA(index)).ok()) return nullptr;
  return Runtime().State(Device::CUDA(index)).allocator.get();
}

struct Registration {
  Registration() {
    RegisterDeviceRuntime(DeviceType::kCUDA, &Runtime());
    RegisterAllocator(DeviceType::kCUDA, &MakeCudaAllocator);
  }
} registration;

}  // namespace

StreamPtr ComputeStreamFor(Device device) { return Runtime().State(device).compute; }

void SetCurrentDevice(Device device) { KILN_CUDA_CHECK(cudaSetDevice(device.index)); }

CachingAllocator* DeviceCachingAllocator(int index) {
  if (!CheckDeviceAvailable(Device::CUDA(index)).ok()) return nullptr;
  return Runtime().State(Device::CUDA(index)).cache.get();
}

}  // namespace kiln::kernels::cuda
