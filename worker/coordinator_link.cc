// CoordinatorLink: channel setup (plaintext or TLS), token metadata and the worker RPCs.
#include "worker/coordinator_link.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace kiln::worker {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

grpc::ChannelArguments WorkerChannelArguments() {
  grpc::ChannelArguments args;
  // Reconnect quickly once kilnd is back (the default backoff grows to two minutes).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  // Note [Heartbeat cost] (scheduler/heartbeat_server.h): no BDP probing. A worker receives one
  // small reply a second; probing answers each with an HTTP/2 PING that kilnd must acknowledge,
  // an extra wakeup and write per heartbeat on the coordinator.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return args;
}

absl::StatusOr<std::unique_ptr<CoordinatorLink>> CoordinatorLink::Create(
    const LinkOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    std::ifstream in(options.tls_ca);
    if (!in) return absl::NotFoundError(absl::StrCat("--tls-ca ", options.tls_ca, ": cannot read"));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args = WorkerChannelArguments();
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::unique_ptr<CoordinatorLink> link(new CoordinatorLink(options));
  link->stub_ =
      v1::ClusterService::NewStub(grpc::CreateCustomChannel(options.server, credentials, args));
  link->heartbeat_ = std::make_unique<HeartbeatStream>(link->stub_.get(), options.token);
  return link;
}

std::unique_ptr<grpc::ClientContext> CoordinatorLink::Context(absl::Duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", "Bearer " + options_.token);
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // Wait for a connection (up to the deadline) instead of failing fast on the channel's last
  // error: after kilnd restarts, a fail-fast call can keep reporting the stale "connection
  // refused" of a subchannel that is still backing off.
  context->set_wait_for_ready(true);
  return context;
}

absl::StatusOr<v1::Assignment> CoordinatorLink::Register(bool reconnect) {
  v1::RegisterRequest request;
  *request.mutable_worker() = options_.worker;
  request.set_pid(getpid());
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  request.set_hostname(host);
  request.set_reconnect(reconnect);
  v1::RegisterResponse response;
  auto context = Context(options_.rpc_timeout);
  absl::Status s = FromGrpc(stub_->Register(context.get(), request, &response));
  if (!s.ok()) return s;
  return response.assignment();
}

absl::StatusOr<v1::HeartbeatResponse> CoordinatorLink::Heartbeat(int64_t step,
                                                                 const std::string& phase,
                                                                 absl::Duration timeout) {
  v1::HeartbeatRequest request;
  *request.mutable_worker() = options_.worker;
  request.set_step(step);
  request.set_phase(phase);
  return heartbeat_->Exchange(request, absl::Now() + std::min(timeout, options_.rpc_timeout));
}

absl::Status CoordinatorLink::ReportMetrics(const std::vector<v1::MetricPoint>& points) {
  v1::ReportMetricsRequest request;
  *request.mutable_worker() = options_.worker;
  for (const v1::MetricPoint& p : points) *request.add_points() = p;
  v1::ReportMetricsResponse response;
  auto context = Context(options_.rpc_timeout);
  return FromGrpc(stub_->ReportMetrics(context.get(), request, &response));
}

absl::StatusOr<bool> CoordinatorLink::ReportCheckpoint(int64_t step, const std::string& path) {
  v1::ReportCheckpointRequest request;
  *request.mutable_worker() = options_.worker;
  request.set_step(step);
  request.set_path(path);
  v1::ReportCheckpointResponse response;
  auto context = Context(options_.rpc_timeout);
  absl::Status s = FromGrpc(stub_->ReportCheckpoint(context.get(), request, &response));
  if (!s.ok()) return s;
  return response.complete();
}

absl::Status CoordinatorLink::ReportExit(int exit_code, const std::string& message) {
  v1::ReportExitRequest request;
  *request.mutable_worker() = options_.worker;
  request.set_exit_code(exit_code);
  request.set_message(message.substr(0, 4096));
  v1::ReportExitResponse response;
  auto context = Context(options_.rpc_timeout);
  return FromGrpc(stub_->ReportExit(context.get(), request, &response));
}

}  // namespace kiln::worker
