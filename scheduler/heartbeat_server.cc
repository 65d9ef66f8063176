// The asynchronous Heartbeat loop: one Call object per in-flight call, re-armed as each arrives.
#include "scheduler/heartbeat_server.h"

#include "scheduler/auth.h"
#include "scheduler/rpc_util.h"

namespace kiln::scheduler {

// One call: requested from the server, then answered, then deleted.
class HeartbeatServer::Call {
 public:
  explicit Call(HeartbeatServer* owner) : owner_(owner), writer_(&context_) {
    owner_->service_->RequestHeartbeat(&context_, &request_, &writer_, owner_->cq_.get(),
                                       owner_->cq_.get(), this);
  }

  // Advances on a completion-queue event; returns false when the call is done.
  bool Proceed(bool ok) {
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
  HeartbeatServer* owner_;
  grpc::ServerContext context_;
  v1::HeartbeatRequest request_;
  v1::HeartbeatResponse response_;
  grpc::ServerAsyncResponseWriter<v1::HeartbeatResponse> writer_;
  bool answered_ = false;
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
  thread_ = std::thread([this] { Loop(); });
}

void HeartbeatServer::Loop() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
    Call* call = static_cast<Call*>(tag);
    if (!call->Proceed(ok)) delete call;
  }
}

void HeartbeatServer::Stop() {
  if (cq_ == nullptr) return;
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
  cq_.reset();
}

}  // namespace kiln::scheduler
