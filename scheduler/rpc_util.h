// Glue between absl::Status and gRPC for kilnd's services: status conversion, and an RpcScope that
// times a call into the latency histogram and records its status code.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "grpcpp/support/status.h"
#include "scheduler/metrics.h"

namespace kiln::scheduler {

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

class RpcScope {
 public:
  RpcScope(Metrics* metrics, const char* method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}
  ~RpcScope() { metrics_->ObserveRpc(method_, absl::ToDoubleSeconds(absl::Now() - start_), code_); }
  grpc::Status Done(const absl::Status& s) {
    code_ = static_cast<int>(s.code());
    return ToGrpc(s);
  }

 private:
  Metrics* metrics_;
  const char* method_;
  absl::Time start_;
  int code_ = 0;
};

}  // namespace kiln::scheduler
