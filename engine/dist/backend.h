// The interface a communication library implements to become a Communicator backend. Backends do
// the transfers only: the Communicator validates arguments, orders operations on its thread,
// numbers them, turns kAvg into a sum and a division, and reports failures (communicator.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/core/tensor.h"
#include "engine/dist/reduce.h"

namespace kiln::dist {

// Every method runs on the communicator's communication thread, one at a time, in issue order.
// Tensors are contiguous tensors on the backend's device type (CPU for Gloo and in-process, CUDA
// for NCCL) whose sizes and dtypes were checked against each other (not across ranks). `seq` is
// the collective's sequence number, the same on every rank; `deadline` bounds every wait inside
// the call. `op` is kSum or kMax (kAvg too when NativeAverage()). A collective returns once this
// rank's part is done (its outputs final) or with the error that stopped it.
class Backend {
 public:
  // Finishes a posted point-to-point transfer by `deadline`; runs on the completion thread.
  using Completion = std::function<absl::Status(absl::Time deadline)>;

  virtual ~Backend() = default;

  // Where this backend's tensors live.
  virtual DeviceType device_type() const { return DeviceType::kCPU; }
  // True when the backend reduces kAvg itself (NCCL); otherwise the Communicator sends kSum and
  // divides afterwards on the host.
  virtual bool NativeAverage() const { return false; }

  virtual absl::Status AllReduce(const Tensor& tensor, ReduceOp op, uint64_t seq,
                                 absl::Time deadline) = 0;
  // input: (world * k), output: (k)
  virtual absl::Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op,
                                     uint64_t seq, absl::Time deadline) = 0;
  // input: (k), output: (world * k)
  virtual absl::Status AllGather(const Tensor& input, const Tensor& output, uint64_t seq,
                                 absl::Time deadline) = 0;
  virtual absl::Status Broadcast(const Tensor& tensor, int root, uint64_t seq,
                                 absl::Time deadline) = 0;
  // input, output: (world * k); chunk j of input goes to rank j, chunk j of output came from it.
  virtual absl::Status AllToAll(const Tensor& input, const Tensor& output, uint64_t seq,
                                absl::Time deadline) = 0;
  virtual absl::Status Barrier(uint64_t seq, absl::Time deadline) = 0;

  // Point-to-point: start the transfer without waiting for the peer (so that two ranks may each
  // send before they receive) and return what finishes it. The tensor must stay alive until the
  // completion has run; the Communicator keeps a reference.
  virtual absl::StatusOr<Completion> PostSend(const Tensor& tensor, int dst, int tag) = 0;
  virtual absl::StatusOr<Completion> PostRecv(const Tensor& tensor, int src, int tag) = 0;

  // Note [Issue order on a device]
  // A device backend's operation must follow the compute-stream work issued before the call that
  // issued it — no more, no less. MarkIssue runs on the issuing thread inside that call and marks
  // the point (an event recorded on the compute stream); BeginOp runs on the communication thread
  // just before the operation with its mark, and the operation's stream waits for it. So only the
  // issuing thread ever touches the compute stream, and the communication thread never orders the
  // compute stream (consumers wait for the Work on the host, after which every later kernel sees
  // the results). Host backends need neither.
  using IssueMark = std::shared_ptr<void>;
  virtual IssueMark MarkIssue() { return nullptr; }
  virtual void BeginOp(const IssueMark& /*mark*/) {}

  // Called once, after this rank's first failure: make peers blocked on this rank fail fast
  // (close connections) instead of waiting out their timeouts.
  virtual void Abort() {}
};

}  // namespace kiln::dist
