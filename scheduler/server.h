// Kilnd: assembles the daemon from its flags (state dir and its lock, store, slots, auth, TLS,
// coordinator, gRPC services with grpc.health.v1 and reflection, metrics endpoint) and runs its
// shutdown.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/server.h"
#include "scheduler/cluster_service.h"
#include "scheduler/config.h"
#include "scheduler/coordinator.h"
#include "scheduler/health_service.h"
#include "scheduler/heartbeat_server.h"
#include "scheduler/job_service.h"
#include "scheduler/metrics_http.h"

namespace kiln::scheduler {

class Kilnd {
 public:
  explicit Kilnd(KilndConfig config) : config_(std::move(config)) {}
  ~Kilnd();

  // Everything up to serving: recovery has run and workers are being launched when this returns.
  absl::Status Start();
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }

  // Stops admitting (health NOT_SERVING, SubmitJob UNAVAILABLE) and asks gangs to checkpoint.
  void BeginDrain();
  // True when no worker process is alive.
  bool Idle() { return coordinator_ == nullptr || coordinator_->Idle(); }
  double grace_s() const { return config_.grace_s; }
  // Stops serving and releases everything.
  void Shutdown();
  void KillWorkers();

 private:
  absl::Status PrepareStateDir();
  std::string ResolveWorkerBinary() const;

  KilndConfig config_;
  int lock_fd_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::atomic<int> streams_{0};
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<KvStore> kv_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<ClusterServiceImpl> cluster_service_;
  std::unique_ptr<HealthServiceImpl> health_;
  std::unique_ptr<HeartbeatServer> heartbeats_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
};

}  // namespace kiln::scheduler
