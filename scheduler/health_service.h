// grpc.health.v1.Health for kilnd: SERVING while it admits jobs, NOT_SERVING once it drains.
#pragma once

#include <atomic>
#include <string>

#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace kiln::scheduler {

// Note [Health service]
// gRPC's built-in health service (grpc::EnableDefaultHealthCheckService) is written on the callback
// API, and registering any callback method makes this gRPC build start "nexting" threads that take
// turns at the shared poller: they pick up Heartbeat traffic meant for the heartbeat thread and
// hand it over. Measured with 500 workers heartbeating (bench/control_plane): about four context
// switches per heartbeat instead of one, and a fifth more kilnd CPU (11.5-12.5 % of a core against
// 9.6-9.8 %). So kilnd implements the same protocol here on the synchronous API. Check answers for
// "" (the whole server) and for kilnd's two services; other names are NOT_FOUND, as the protocol
// specifies. Watch streams status changes.
class HealthServiceImpl final : public grpc::health::v1::Health::Service {
 public:
  HealthServiceImpl(std::atomic<int>* streams, std::atomic<bool>* shutting_down)
      : streams_(streams), shutting_down_(shutting_down) {}

  void SetServing(bool serving);

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  static bool Known(const std::string& service);
  grpc::health::v1::HealthCheckResponse::ServingStatus Status();

  std::atomic<int>* streams_;
  std::atomic<bool>* shutting_down_;
  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kiln::scheduler
