// NcclBackend: a non-blocking NCCL communicator on one device, a dedicated communication stream,
// and polled waits that honour the deadline and NCCL's asynchronous errors.
#include "engine/dist/nccl_backend.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/device_runtime.h"

namespace kiln::dist {
namespace {

// Note [NCCL waits]
// The communicator is created non-blocking (config.blocking = 0): NCCL calls return at once and
// their progress and failures show in ncclCommGetAsyncError. Every operation is enqueued on the
// communication stream after the event its issuing call recorded on the compute stream (Note
// [Issue order on a device] in backend.h: it sees the kernels that produced its inputs, and only
// those), followed by an event of its own. A non-blocking call may return ncclInProgress before
// its kernel is on the stream, so the event of its own is recorded only once
// ncclCommGetAsyncError reports ncclSuccess (Settle): recorded earlier, it would complete before
// the collective ran, and the results would be read too early. The communication thread then
// polls that event, the asynchronous error and the deadline; on an error or timeout it aborts the
// NCCL communicator (ncclCommAbort), which releases the kernels waiting for a dead peer, and
// returns the error. The Work completes once the event has: a consumer waits for it on the host,
// and the kernels it issues afterwards read the collective's results.

#define KILN_NCCL_RETURN_IF_ERROR(call)                                                   \
  do {                                                                                    \
    const ncclResult_t kiln_nccl_result_ = (call);                                        \
    if (kiln_nccl_result_ != ncclSuccess && kiln_nccl_result_ != ncclInProgress) {        \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": ", #call, ": ", \
                                              ncclGetErrorString(kiln_nccl_result_)));    \
    }                                                                                     \
  } while (0)

#define KILN_CUDART_RETURN_IF_ERROR(call)                                                 \
  do {                                                                                    \
    const cudaError_t kiln_cudart_error_ = (call);                                        \
    if (kiln_cudart_error_ != cudaSuccess) {                                              \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": ", #call, ": ", \
                                              cudaGetErrorString(kiln_cudart_error_)));   \
    }                                                                                     \
  } while (0)

absl::StatusOr<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return absl::InvalidArgumentError("dtype has no NCCL type");
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kSum:
      break;
  }
  return ncclSum;
}

class NcclBackend : public Backend {
 public:
  NcclBackend(Device device, int rank, int world, absl::Duration timeout)
      : device_(device), rank_(rank), world_(world), timeout_(timeout) {}

  ~NcclBackend() override {
    cudaSetDevice(device_.index);
    if (comm_ != nullptr) {
      if (aborted_.load()) {
        // ncclCommAbort already freed it.
      } else {
        cudaStreamSynchronize(stream_);
        ncclCommAbort(comm_);  // releases everything without waiting for peers that may be gone
      }
    }
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    for (cudaEvent_t e : free_marks_) cudaEventDestroy(e);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (scratch_ != nullptr) cudaFree(scratch_);
  }

  absl::Status Init(Store* store, absl::Duration timeout) {
    KILN_CUDART_RETURN_IF_ERROR(cudaSetDevice(device_.index));
    KILN_CUDART_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KILN_CUDART_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    KILN_CUDART_RETURN_IF_ERROR(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    KILN_CUDART_RETURN_IF_ERROR(cudaMalloc(&scratch_, sizeof(int32_t)));
    ncclUniqueId id;
    if (rank_ == 0) {
      KILN_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
      KILN_RETURN_IF_ERROR(store->Set("nccl/unique_id",
                                      std::string(reinterpret_cast<const char*>(&id), sizeof(id))));
    } else {
      KILN_ASSIGN_OR_RETURN(const std::string bytes, store->Get("nccl/unique_id", timeout));
      if (bytes.size() != sizeof(id)) return absl::InternalError("malformed NCCL unique id");
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    KILN_NCCL_RETURN_IF_ERROR(ncclCommInitRankConfig(&comm_, world_, id, rank_, &config));
    return Settle(absl::Now() + timeout, "NCCL communicator initialization");
  }

  bool NativeAverage() const override { return true; }
  DeviceType device_type() const override { return DeviceType::kCUDA; }

  absl::Status AllReduce(const Tensor& t, ReduceOp op, uint64_t, absl::Time deadline) override {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(t.dtype()));
    return Run("AllReduce", deadline, [&] {
      return ncclAllReduce(t.raw_data(), t.raw_data(), Count(t), type, NcclOp(op), comm_, stream_);
    });
  }

  absl::Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op, uint64_t,
                             absl::Time deadline) override {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(input.dtype()));
    return Run("ReduceScatter", deadline, [&] {
      return ncclReduceScatter(input.raw_data(), output.raw_data(), Count(output), type, NcclOp(op),
                               comm_, stream_);
    });
  }

  absl::Status AllGather(const Tensor& input, const Tensor& output, uint64_t,
                         absl::Time deadline) override {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(input.dtype()));
    return Run("AllGather", deadline, [&] {
      return ncclAllGather(input.raw_data(), output.raw_data(), Count(input), type, comm_, stream_);
    });
  }

  absl::Status Broadcast(const Tensor& t, int root, uint64_t, absl::Time deadline) override {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(t.dtype()));
    return Run("Broadcast", deadline, [&] {
      return ncclBroadcast(t.raw_data(), t.raw_data(), Count(t), type, root, comm_, stream_);
    });
  }

  absl::Status AllToAll(const Tensor& input, const Tensor& output, uint64_t,
                        absl::Time deadline) override {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(input.dtype()));
    const size_t chunk = Count(input) / static_cast<size_t>(world_);
    const size_t bytes = chunk * input.element_size();
    return Run("AllToAll", deadline, [&]() -> ncclResult_t {
      ncclResult_t r = ncclGroupStart();
      for (int peer = 0; peer < world_ && (r == ncclSuccess || r == ncclInProgress); ++peer) {
        r = ncclSend(static_cast<const char*>(input.raw_data()) + peer * bytes, chunk, type, peer,
                     comm_, stream_);
        if (r == ncclSuccess || r == ncclInProgress) {
          r = ncclRecv(static_cast<char*>(output.raw_data()) + peer * bytes, chunk, type, peer,
                       comm_, stream_);
        }
      }
      const ncclResult_t end = ncclGroupEnd();
      return r == ncclSuccess || r == ncclInProgress ? end : r;
    });
  }

  absl::Status Barrier(uint64_t, absl::Time deadline) override {
    return Run("Barrier", deadline, [&] {
      return ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_);
    });
  }

  // Note [NCCL point to point]: an NCCL send occupies its stream until the matching receive is
  // posted, so unlike Gloo two ranks must not both send before receiving on one communicator.
  absl::StatusOr<Completion> PostSend(const Tensor& t, int dst, int) override {
    return PostPeer(t, dst, /*send=*/true);
  }
  absl::StatusOr<Completion> PostRecv(const Tensor& t, int src, int) override {
    return PostPeer(t, src, /*send=*/false);
  }

  // Note [Issue order on a device]: an event recorded on the compute stream by the issuing thread,
  // from a pool (returned when the operation is done with it).
  IssueMark MarkIssue() override {
    cudaEvent_t event = nullptr;
    {
      std::lock_guard<std::mutex> lock(marks_mu_);
      if (!free_marks_.empty()) {
        event = free_marks_.back();
        free_marks_.pop_back();
      }
    }
    int previous = 0;
    cudaGetDevice(&previous);
    if (previous != device_.index) cudaSetDevice(device_.index);
    if (event == nullptr &&
        cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) {
      event = nullptr;
    }
    if (event != nullptr) {
      auto compute = static_cast<cudaStream_t>(RuntimeFor(device_).ComputeStream(device_));
      if (cudaEventRecord(event, compute) != cudaSuccess) {
        cudaEventDestroy(event);
        event = nullptr;
      }
    }
    if (previous != device_.index) cudaSetDevice(previous);
    if (event == nullptr) {
      (void)cudaGetLastError();
      return nullptr;  // Enqueue falls back to recording on the communication thread
    }
    return IssueMark(event, [this](void* e) {
      std::lock_guard<std::mutex> lock(marks_mu_);
      free_marks_.push_back(static_cast<cudaEvent_t>(e));
    });
  }
  void BeginOp(const IssueMark& mark) override {
    issue_mark_ = static_cast<cudaEvent_t>(mark.get());
  }

  // May run on the completion thread while the communication thread is inside a call: the flag
  // is atomic and claimed once, so the communicator is aborted exactly once.
  void Abort() override {
    if (comm_ != nullptr && !aborted_.exchange(true)) ncclCommAbort(comm_);
  }

 private:
  static size_t Count(const Tensor& t) { return static_cast<size_t>(t.numel()); }

  // Enqueues `issue` on the communication stream after the compute stream's work, then waits.
  template <typename Issue>
  absl::Status Run(const char* what, absl::Time deadline, Issue&& issue) {
    KILN_RETURN_IF_ERROR(Enqueue(what, deadline, issue));
    return Wait(what, deadline);
  }

  // Note [NCCL waits]: the operation is on the stream (Settle) before done_ is recorded after it.
  template <typename Issue>
  absl::Status Enqueue(const char* what, absl::Time deadline, Issue&& issue) {
    if (aborted_.load()) return absl::AbortedError("the NCCL communicator was aborted");
    KILN_CUDART_RETURN_IF_ERROR(cudaSetDevice(device_.index));
    cudaEvent_t ready = issue_mark_;  // Note [Issue order on a device]
    issue_mark_ = nullptr;
    if (ready ==
        nullptr) {  // no mark (its event could not be made): the compute stream as it is now
      auto compute = static_cast<cudaStream_t>(RuntimeFor(device_).ComputeStream(device_));
      KILN_CUDART_RETURN_IF_ERROR(cudaEventRecord(ready_, compute));
      ready = ready_;
    }
    KILN_CUDART_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, ready, 0));
    KILN_NCCL_RETURN_IF_ERROR(issue());
    KILN_RETURN_IF_ERROR(Settle(deadline, what));
    KILN_CUDART_RETURN_IF_ERROR(cudaEventRecord(done_, stream_));
    return absl::OkStatus();
  }

  // Note [NCCL waits]: poll the operation's event, NCCL's error state and the deadline.
  absl::Status Wait(const char* what, absl::Time deadline) {
    for (;;) {
      const cudaError_t q = cudaEventQuery(done_);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) {
        Abort();
        return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(q)));
      }
      KILN_RETURN_IF_ERROR(CheckAsync(what));
      if (absl::Now() > deadline) {
        Abort();
        return absl::DeadlineExceededError(
            absl::StrCat(what, " timed out waiting for peers; the NCCL communicator was aborted"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return absl::OkStatus();
  }

  absl::Status CheckAsync(const char* what) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      const std::string detail = ncclGetLastError(comm_);
      Abort();
      return absl::UnavailableError(
          absl::StrCat(what, ": NCCL reported ", ncclGetErrorString(r != ncclSuccess ? r : state),
                       detail.empty() ? "" : " (", detail, detail.empty() ? "" : ")"));
    }
    return absl::OkStatus();
  }

  // Waits for a non-blocking call (initialization) to leave the in-progress state.
  absl::Status Settle(absl::Time deadline, const char* what) {
    for (;;) {
      ncclResult_t state = ncclInProgress;
      KILN_NCCL_RETURN_IF_ERROR(ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) {
        Abort();
        return absl::UnavailableError(absl::StrCat(what, " failed: ", ncclGetErrorString(state)));
      }
      if (absl::Now() > deadline) {
        Abort();
        return absl::DeadlineExceededError(absl::StrCat(what, " timed out"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  absl::StatusOr<Completion> PostPeer(const Tensor& t, int peer, bool send) {
    KILN_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(t.dtype()));
    cudaEvent_t done;
    KILN_CUDART_RETURN_IF_ERROR(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    // The Communicator gives point-to-point posts no deadline; the enqueue is bounded by the
    // communicator's timeout instead.
    const absl::Status enqueued = Enqueue(send ? "send" : "receive", absl::Now() + timeout_, [&] {
      return send ? ncclSend(t.raw_data(), Count(t), type, peer, comm_, stream_)
                  : ncclRecv(t.raw_data(), Count(t), type, peer, comm_, stream_);
    });
    if (!enqueued.ok()) {
      cudaEventDestroy(done);
      return enqueued;
    }
    KILN_CUDART_RETURN_IF_ERROR(cudaEventRecord(done, stream_));
    return Completion([this, done, t, send](absl::Time deadline) -> absl::Status {
      for (;;) {
        const cudaError_t q = cudaEventQuery(done);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady || absl::Now() > deadline) {
          cudaEventDestroy(done);
          Abort();
          return absl::DeadlineExceededError(
              absl::StrCat(send ? "send" : "receive", " did not complete; NCCL aborted"));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      cudaEventDestroy(done);
      return absl::OkStatus();
    });
  }

  const Device device_;
  const int rank_, world_;
  const absl::Duration timeout_;  // bounds the enqueue of point-to-point posts
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  cudaEvent_t issue_mark_ = nullptr;  // the running operation's mark (communication thread only)
  std::mutex marks_mu_;
  std::vector<cudaEvent_t> free_marks_;
  void* scratch_ = nullptr;  // the barrier's one int on the device
  std::atomic<bool> aborted_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeNcclBackend(Store* store, int rank, int world,
                                                         const CommunicatorOptions& options) {
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(Device::CUDA(0)));
  const int count = RuntimeFor(Device::CUDA(0)).DeviceCount();
  const Device device = Device::CUDA(options.cuda_device >= 0 ? options.cuda_device : rank % count);
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(device));
  auto backend = std::make_unique<NcclBackend>(device, rank, world, options.timeout);
  KILN_RETURN_IF_ERROR(backend->Init(store, options.timeout));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace kiln::dist
