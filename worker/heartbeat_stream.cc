// HeartbeatStream: the worker side of kilnd's HeartbeatStream call (Note [Heartbeat stream]).
#include "worker/heartbeat_stream.h"

#include "absl/strings/str_cat.h"
#include "worker/coordinator_link.h"

namespace kiln::worker {

HeartbeatStream::HeartbeatStream(v1::ClusterService::Stub* stub, std::string token)
    : stub_(stub), token_(std::move(token)) {}

HeartbeatStream::~HeartbeatStream() {
  if (stream_ != nullptr) {
    context_->TryCancel();
    (void)Close(Wait::kFailed, "closing");
  }
  cq_.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq_.Next(&tag, &ok)) {
  }
}

absl::StatusOr<v1::HeartbeatResponse> HeartbeatStream::Exchange(
    const v1::HeartbeatRequest& request, absl::Time deadline) {
  if (unary_) return Unary(request, deadline);
  absl::Status failed;
  v1::HeartbeatResponse response;
  if (stream_ == nullptr) failed = Open(deadline);
  if (failed.ok()) {
    stream_->Write(request, this);
    const Wait wait = Await(deadline);
    if (wait != Wait::kDone) failed = Close(wait, "sending a heartbeat");
  }
  if (failed.ok()) {
    stream_->Read(&response, this);
    const Wait wait = Await(deadline);
    if (wait != Wait::kDone) failed = Close(wait, "waiting for the heartbeat's reply");
  }
  if (failed.ok()) return response;
  if (failed.code() == absl::StatusCode::kUnimplemented) {
    unary_ = true;  // an older kilnd
    return Unary(request, deadline);
  }
  return failed;
}

absl::Status HeartbeatStream::Open(absl::Time deadline) {
  context_ = std::make_unique<grpc::ClientContext>();
  context_->AddMetadata("authorization", "Bearer " + token_);
  // As CoordinatorLink::Context: wait for a connection rather than fail on a stale error.
  context_->set_wait_for_ready(true);
  stream_ = stub_->PrepareAsyncHeartbeatStream(context_.get(), &cq_);
  stream_->StartCall(this);
  const Wait wait = Await(deadline);
  return wait == Wait::kDone ? absl::OkStatus() : Close(wait, "opening the heartbeat stream");
}

HeartbeatStream::Wait HeartbeatStream::Await(absl::Time deadline) {
  void* tag = nullptr;
  bool ok = false;
  if (deadline == absl::InfiniteFuture()) return cq_.Next(&tag, &ok) && ok ? Wait::kDone : Wait::kFailed;
  switch (cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(deadline))) {
    case grpc::CompletionQueue::GOT_EVENT:
      return ok ? Wait::kDone : Wait::kFailed;
    case grpc::CompletionQueue::TIMEOUT:
      return Wait::kTimedOut;
    case grpc::CompletionQueue::SHUTDOWN:
      break;
  }
  return Wait::kFailed;
}

absl::Status HeartbeatStream::Close(Wait wait, const std::string& what) {
  if (wait == Wait::kTimedOut) {
    // Cancelling completes the pending operation (with ok = false); wait for it before Finish.
    context_->TryCancel();
    (void)Await(absl::InfiniteFuture());
  }
  grpc::Status status;
  stream_->Finish(&status, this);
  // A failed operation means the call is over, so its status is due at once; a kilnd that
  // stalls here anyway gets a second to send it before the call is cancelled.
  if (Await(absl::Now() + absl::Seconds(1)) == Wait::kTimedOut) {
    context_->TryCancel();
    (void)Await(absl::InfiniteFuture());
  }
  stream_.reset();
  context_.reset();
  if (wait == Wait::kTimedOut) {
    return absl::DeadlineExceededError(absl::StrCat("no answer from kilnd while ", what));
  }
  if (status.ok()) return absl::UnavailableError("kilnd ended the heartbeat stream");
  return FromGrpc(status);
}

absl::StatusOr<v1::HeartbeatResponse> HeartbeatStream::Unary(const v1::HeartbeatRequest& request,
                                                             absl::Time deadline) {
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + token_);
  context.set_deadline(absl::ToChronoTime(deadline));
  context.set_wait_for_ready(true);
  v1::HeartbeatResponse response;
  absl::Status s = FromGrpc(stub_->Heartbeat(&context, request, &response));
  if (!s.ok()) return s;
  return response;
}

}  // namespace kiln::worker
