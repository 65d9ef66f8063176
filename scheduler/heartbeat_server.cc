// The asynchronous heartbeat loop: one Call per unary Heartbeat and one StreamCall per worker's
// HeartbeatStream, each re-armed as the previous one arrives (Note [Heartbeat cost]).
#include "scheduler/heartbeat_server.h"

#include "scheduler/auth.h"
#include "scheduler/log.h"
#include "scheduler/rpc_util.h"

namespace kiln::scheduler {

// What the loop sees on the completion queue: an object that advances on each event and says when
// it is done (and may be deleted). Counted, so that Stop knows when no event can arrive any more.
class HeartbeatServer::Handler {
 public:
  explicit Handler(HeartbeatServer* owner) : owner_(owner) {
    absl::MutexLock lock(&owner_->mu_);
    ++owner_->handlers_;
  }
  virtual ~Handler() {
    absl::MutexLock lock(&owner_->mu_);
    --owner_->handlers_;
  }
  // Returns false when the call is over.
  virtual bool Proceed(bool ok) = 0;

 protected:
  HeartbeatServer* owner_;
};

// One unary call: requested from the server, then answered, then deleted.
class HeartbeatServer::Call final : public Handler {
 public:
  explicit Call(HeartbeatServer* owner) : Handler(owner), writer_(&context_) {
    owner_->service_->RequestHeartbeat(&context_, &request_, &writer_, owner_->cq_.get(),
                                       owner_->cq_.get(), this);
  }

  bool Proceed(bool ok) override {
    if (answered_ || !ok) return false;
    new Call(owner_);  // keep one call armed for the next heartbeat
    RpcScope scope(owner_->metrics_, "Heartbeat");
    absl::StatusOr<v1::HeartbeatResponse> r =
        owner_->coordinator_->Heartbeat(BearerToken(context_), request_);
    if (r.ok()) response_ = *std::move(r);
    answered_ = true;
    writer_.Finish(response_, scope.Done(r.status()), this);
    return true;
  }

 private:
  grpc::ServerContext context_;
  v1::HeartbeatRequest request_;
  v1::HeartbeatResponse response_;
  grpc::ServerAsyncResponseWriter<v1::HeartbeatResponse> writer_;
  bool answered_ = false;
};

// One worker's stream: read a heartbeat, answer it, read the next, until the worker closes its side,
// the call breaks, the coordinator refuses a heartbeat (the stream ends with that status), or kilnd
// shuts down. Exactly one operation is pending at a time, so `this` is the only tag.
class HeartbeatServer::StreamCall final : public Handler {
 public:
  explicit StreamCall(HeartbeatServer* owner) : Handler(owner), stream_(&context_) {
    owner_->service_->RequestHeartbeatStream(&context_, &stream_, owner_->cq_.get(),
                                             owner_->cq_.get(), this);
  }
  ~StreamCall() override {
    if (tracked_) owner_->Untrack(this);
  }

  void Cancel() { context_.TryCancel(); }

  bool Proceed(bool ok) override {
    switch (state_) {
      case State::kRequested:
        if (!ok) return false;  // the server is shutting down
        new StreamCall(owner_);  // keep one stream armed for the next worker
        tracked_ = owner_->Track(this);
        if (!tracked_) return Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                                  "kilnd is shutting down"));
        token_ = BearerToken(context_);
        return Read();
      case State::kReading:
        // The worker closed its side, or the call broke: nothing more will arrive.
        if (!ok) return Finish(grpc::Status::OK);
        return Answer();
      case State::kWriting:
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
        return Read();
      case State::kFinishing:
        return false;
    }
    return false;
  }

 private:
  enum class State { kRequested, kReading, kWriting, kFinishing };

  bool Read() {
    state_ = State::kReading;
    stream_.Read(&request_, this);
    return true;
  }

  bool Answer() {
    RpcScope scope(owner_->metrics_, "HeartbeatStream");
    absl::StatusOr<v1::HeartbeatResponse> r = owner_->coordinator_->Heartbeat(token_, request_);
    grpc::Status status = scope.Done(r.status());
    if (!r.ok()) return Finish(status);
    response_ = *std::move(r);
    state_ = State::kWriting;
    stream_.Write(response_, this);
    return true;
  }

  bool Finish(const grpc::Status& status) {
    state_ = State::kFinishing;
    stream_.Finish(status, this);
    return true;
  }

  grpc::ServerContext context_;
  grpc::ServerAsyncReaderWriter<v1::HeartbeatResponse, v1::HeartbeatRequest> stream_;
  std::string token_;
  v1::HeartbeatRequest request_;
  v1::HeartbeatResponse response_;
  State state_ = State::kRequested;
  bool tracked_ = false;
};

HeartbeatServer::HeartbeatServer(grpc::ServerBuilder* builder, ClusterServiceImpl* service,
                                 Coordinator* coordinator, Metrics* metrics)
    : service_(service),
      coordinator_(coordinator),
      metrics_(metrics),
      cq_(builder->AddCompletionQueue()) {}

HeartbeatServer::~HeartbeatServer() { Stop(); }

void HeartbeatServer::Start() {
  new Call(this);
  new StreamCall(this);
  thread_ = std::thread([this] { Loop(); });
}

void HeartbeatServer::Loop() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
    Handler* handler = static_cast<Handler*>(tag);
    if (!handler->Proceed(ok)) delete handler;
  }
}

bool HeartbeatServer::Track(StreamCall* stream) {
  absl::MutexLock lock(&mu_);
  if (closing_) return false;
  streams_.insert(stream);
  return true;
}

void HeartbeatServer::Untrack(StreamCall* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void HeartbeatServer::CancelStreams() {
  absl::MutexLock lock(&mu_);
  closing_ = true;
  for (StreamCall* stream : streams_) stream->Cancel();
}

void HeartbeatServer::Stop() {
  if (cq_ == nullptr) return;
  CancelStreams();
  if (thread_.joinable()) {
    // The server has shut down, so every pending operation completes (with ok = false) and every
    // call object gets deleted; only then may the queue shut down (Note [Heartbeat cost]).
    absl::MutexLock lock(&mu_);
    bool (*none_left)(int*) = [](int* handlers) { return *handlers == 0; };
    if (!mu_.AwaitWithTimeout(absl::Condition(none_left, &handlers_), absl::Seconds(10))) {
      LogWarn("heartbeat calls still open 10 s after shutdown", {{"calls", handlers_}});
    }
  }
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
  cq_.reset();
}

}  // namespace kiln::scheduler
