// HealthServiceImpl: Check and Watch over one serving flag.
#include "scheduler/health_service.h"

#include "scheduler/limits.h"

namespace kiln::scheduler {

using grpc::health::v1::HealthCheckResponse;

bool HealthServiceImpl::Known(const std::string& service) {
  return service.empty() || service == "kiln.v1.JobService" || service == "kiln.v1.ClusterService";
}

void HealthServiceImpl::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (serving_ != serving) ++changes_;
  serving_ = serving;
}

HealthCheckResponse::ServingStatus HealthServiceImpl::Status() {
  absl::MutexLock lock(&mu_);
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthServiceImpl::Check(grpc::ServerContext* context,
                                      const grpc::health::v1::HealthCheckRequest* request,
                                      HealthCheckResponse* response) {
  if (!Known(request->service())) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  }
  response->set_status(Status());
  return grpc::Status::OK;
}

grpc::Status HealthServiceImpl::Watch(grpc::ServerContext* context,
                                      const grpc::health::v1::HealthCheckRequest* request,
                                      grpc::ServerWriter<HealthCheckResponse>* writer) {
  if (streams_->fetch_add(1) >= kMaxStreams) {
    streams_->fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many open streams");
  }
  const bool known = Known(request->service());
  uint64_t seen = ~uint64_t{0};
  while (!context->IsCancelled() && !shutting_down_->load()) {
    uint64_t changes;
    {
      absl::MutexLock lock(&mu_);
      changes = changes_;
    }
    if (changes != seen) {
      HealthCheckResponse response;
      response.set_status(known ? Status() : HealthCheckResponse::SERVICE_UNKNOWN);
      if (!writer->Write(response)) break;
      seen = changes;
    }
    absl::MutexLock lock(&mu_);
    const uint64_t now_seen = seen;
    auto changed = [this, now_seen]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return changes_ != now_seen; };
    mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(500));
  }
  streams_->fetch_sub(1);
  return grpc::Status::OK;
}

}  // namespace kiln::scheduler
