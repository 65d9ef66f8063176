// ClusterService over the Coordinator and the KvStore: every call carries the per-job worker token,
// checked against the job's current attempt before anything else. Heartbeat and HeartbeatStream,
// the hot path, are served asynchronously by HeartbeatServer (heartbeat_server.h, Note [Heartbeat
// cost]).
#pragma once

#include <atomic>

#include "kiln/v1/cluster_service.grpc.pb.h"
#include "scheduler/coordinator.h"
#include "scheduler/kv_store.h"
#include "scheduler/metrics.h"

namespace kiln::scheduler {

class ClusterServiceImpl final
    : public v1::ClusterService::WithAsyncMethod_Heartbeat<
          v1::ClusterService::WithAsyncMethod_HeartbeatStream<v1::ClusterService::Service>> {
 public:
  ClusterServiceImpl(Coordinator* coordinator, KvStore* kv, Metrics* metrics,
                     std::atomic<int>* streams, std::atomic<bool>* shutting_down)
      : coordinator_(coordinator),
        kv_(kv),
        metrics_(metrics),
        streams_(streams),
        shutting_down_(shutting_down) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status ReportMetrics(grpc::ServerContext* context, const v1::ReportMetricsRequest* request,
                             v1::ReportMetricsResponse* response) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext* context,
                                const v1::ReportCheckpointRequest* request,
                                v1::ReportCheckpointResponse* response) override;
  grpc::Status ReportExit(grpc::ServerContext* context, const v1::ReportExitRequest* request,
                          v1::ReportExitResponse* response) override;
  grpc::Status Set(grpc::ServerContext* context, const v1::KvSetRequest* request,
                   v1::KvSetResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::KvGetRequest* request,
                   v1::KvGetResponse* response) override;
  grpc::Status Wait(grpc::ServerContext* context, const v1::KvWaitRequest* request,
                    v1::KvWaitResponse* response) override;
  grpc::Status Add(grpc::ServerContext* context, const v1::KvAddRequest* request,
                   v1::KvAddResponse* response) override;

  static std::vector<std::string> MethodNames();

 private:
  Coordinator* coordinator_;
  KvStore* kv_;
  Metrics* metrics_;
  std::atomic<int>* streams_;
  std::atomic<bool>* shutting_down_;
};

}  // namespace kiln::scheduler
