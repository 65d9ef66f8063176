// ClusterService handlers: token extraction, timing, and forwarding to the Coordinator / KvStore.
#include "scheduler/cluster_service.h"

#include "absl/strings/str_cat.h"
#include "scheduler/auth.h"
#include "scheduler/limits.h"
#include "scheduler/rpc_util.h"

namespace kiln::scheduler {

std::vector<std::string> ClusterServiceImpl::MethodNames() {
  return {"Register",   "Heartbeat", "HeartbeatStream", "ReportMetrics", "ReportCheckpoint",
          "ReportExit", "Set",       "Get",             "Add"};
}

grpc::Status ClusterServiceImpl::Register(grpc::ServerContext* context,
                                          const v1::RegisterRequest* request,
                                          v1::RegisterResponse* response) {
  RpcScope scope(metrics_, "Register");
  absl::StatusOr<v1::Assignment> a = coordinator_->Register(BearerToken(*context), *request);
  if (a.ok()) *response->mutable_assignment() = *std::move(a);
  return scope.Done(a.status());
}

grpc::Status ClusterServiceImpl::ReportMetrics(grpc::ServerContext* context,
                                               const v1::ReportMetricsRequest* request,
                                               v1::ReportMetricsResponse* response) {
  RpcScope scope(metrics_, "ReportMetrics");
  return scope.Done(coordinator_->ReportMetrics(BearerToken(*context), *request));
}

grpc::Status ClusterServiceImpl::ReportCheckpoint(grpc::ServerContext* context,
                                                  const v1::ReportCheckpointRequest* request,
                                                  v1::ReportCheckpointResponse* response) {
  RpcScope scope(metrics_, "ReportCheckpoint");
  absl::StatusOr<bool> complete = coordinator_->ReportCheckpoint(BearerToken(*context), *request);
  if (complete.ok()) response->set_complete(*complete);
  return scope.Done(complete.status());
}

grpc::Status ClusterServiceImpl::ReportExit(grpc::ServerContext* context,
                                            const v1::ReportExitRequest* request,
                                            v1::ReportExitResponse* response) {
  RpcScope scope(metrics_, "ReportExit");
  return scope.Done(coordinator_->ReportExit(BearerToken(*context), *request));
}

grpc::Status ClusterServiceImpl::Set(grpc::ServerContext* context, const v1::KvSetRequest* request,
                                     v1::KvSetResponse* response) {
  RpcScope scope(metrics_, "Set");
  absl::Status s = coordinator_->AuthorizeWorker(BearerToken(*context), request->worker());
  if (s.ok()) {
    s = kv_->Set(request->worker().job_id(), request->worker().attempt(), request->key(),
                 request->value());
  }
  return scope.Done(s);
}

grpc::Status ClusterServiceImpl::Get(grpc::ServerContext* context, const v1::KvGetRequest* request,
                                     v1::KvGetResponse* response) {
  RpcScope scope(metrics_, "Get");
  absl::Status s = coordinator_->AuthorizeWorker(BearerToken(*context), request->worker());
  if (!s.ok()) return scope.Done(s);
  absl::StatusOr<std::string> value =
      kv_->Get(request->worker().job_id(), request->worker().attempt(), request->key());
  if (value.ok()) {
    response->set_found(true);
    response->set_value(*std::move(value));
  } else if (absl::IsNotFound(value.status())) {
    response->set_found(false);
  } else {
    return scope.Done(value.status());
  }
  return scope.Done(absl::OkStatus());
}

grpc::Status ClusterServiceImpl::Add(grpc::ServerContext* context, const v1::KvAddRequest* request,
                                     v1::KvAddResponse* response) {
  RpcScope scope(metrics_, "Add");
  absl::Status s = coordinator_->AuthorizeWorker(BearerToken(*context), request->worker());
  if (!s.ok()) return scope.Done(s);
  absl::StatusOr<int64_t> value = kv_->Add(request->worker().job_id(), request->worker().attempt(),
                                           request->key(), request->delta());
  if (value.ok()) response->set_value(*value);
  return scope.Done(value.status());
}

grpc::Status ClusterServiceImpl::Wait(grpc::ServerContext* context,
                                      const v1::KvWaitRequest* request,
                                      v1::KvWaitResponse* response) {
  absl::Status s = coordinator_->AuthorizeWorker(BearerToken(*context), request->worker());
  if (!s.ok()) return ToGrpc(s);
  if (request->timeout_ms() < 0 || request->timeout_ms() > 300000) {
    return ToGrpc(absl::InvalidArgumentError("timeout_ms must be 0..300000"));
  }
  if (streams_->fetch_add(1) >= kMaxStreams) {
    streams_->fetch_sub(1);
    return ToGrpc(absl::ResourceExhaustedError("too many blocked calls"));
  }
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  s = kv_->Wait(request->worker().job_id(), request->worker().attempt(), keys,
                absl::Milliseconds(request->timeout_ms()),
                [&] { return context->IsCancelled() || shutting_down_->load(); });
  streams_->fetch_sub(1);
  return ToGrpc(s);
}

}  // namespace kiln::scheduler
