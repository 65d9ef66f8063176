// A worker's heartbeat stream to kilnd: one long-lived HeartbeatStream call, a request and its
// reply per heartbeat, each bounded by a deadline. Any failure ends the stream (its status is
// returned) and the next heartbeat opens a new one. See Note [Heartbeat stream].
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "kiln/v1/cluster_service.grpc.pb.h"

namespace kiln::worker {

// Note [Heartbeat stream]
// Why a stream: Note [Heartbeat cost] (scheduler/heartbeat_server.h). Why the asynchronous client
// API: a heartbeat's deadline bounds how long the loss of kilnd goes unnoticed (the worker's grace
// period counts from it), and the synchronous stream API has no per-message deadline. So every
// operation is started on a private completion queue and waited for until the heartbeat's
// deadline; on a timeout the call is cancelled, which makes the pending operation complete, and
// the stream is finished and dropped. Only one operation is pending at a time. Errors keep their
// meaning: a refusal by kilnd (a superseded attempt, a bad token) ends the stream with kilnd's
// status, so the caller still tells "stop" from "retry" (IsTransient). A kilnd without the
// streaming method (UNIMPLEMENTED) gets unary heartbeats from then on.
class HeartbeatStream {
 public:
  // `stub` must outlive this object.
  HeartbeatStream(v1::ClusterService::Stub* stub, std::string token);
  ~HeartbeatStream();

  // Sends `request` and waits for its reply until `deadline`.
  absl::StatusOr<v1::HeartbeatResponse> Exchange(const v1::HeartbeatRequest& request,
                                                 absl::Time deadline);

 private:
  enum class Wait { kDone, kFailed, kTimedOut };
  absl::Status Open(absl::Time deadline);
  // Waits for the one pending operation.
  Wait Await(absl::Time deadline);
  // Ends the stream after `wait` went wrong; returns why, as a status.
  absl::Status Close(Wait wait, const std::string& what);
  absl::StatusOr<v1::HeartbeatResponse> Unary(const v1::HeartbeatRequest& request,
                                              absl::Time deadline);

  v1::ClusterService::Stub* stub_;
  std::string token_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::HeartbeatRequest, v1::HeartbeatResponse>>
      stream_;
  bool unary_ = false;  // kilnd has no HeartbeatStream
};

}  // namespace kiln::worker
