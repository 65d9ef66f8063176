// JobService over the Coordinator: authentication of user calls (bearer token, when configured),
// request bounds, and the two server streams (WatchJob, StreamLogs).
#pragma once

#include <atomic>
#include <string>

#include "kiln/v1/job_service.grpc.pb.h"
#include "scheduler/coordinator.h"
#include "scheduler/metrics.h"

namespace kiln::scheduler {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // `user_token` empty = no authentication. `streams` counts open streams across services.
  JobServiceImpl(Coordinator* coordinator, Metrics* metrics, std::string user_token,
                 std::atomic<int>* streams, std::atomic<bool>* shutting_down)
      : coordinator_(coordinator),
        metrics_(metrics),
        user_token_(std::move(user_token)),
        streams_(streams),
        shutting_down_(shutting_down) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobUpdate>* writer) override;
  grpc::Status StreamLogs(grpc::ServerContext* context, const v1::StreamLogsRequest* request,
                          grpc::ServerWriter<v1::LogChunk>* writer) override;
  grpc::Status GetJobMetrics(grpc::ServerContext* context, const v1::GetJobMetricsRequest* request,
                             v1::GetJobMetricsResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;

  static std::vector<std::string> MethodNames();

 private:
  absl::Status Authenticate(const grpc::ServerContext& context) const;
  bool StreamOver(grpc::ServerContext* context) const;

  Coordinator* coordinator_;
  Metrics* metrics_;
  const std::string user_token_;
  std::atomic<int>* streams_;
  std::atomic<bool>* shutting_down_;
};

}  // namespace kiln::scheduler
