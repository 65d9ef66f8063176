// A worker's connection to kilnd: the ClusterService stub with the per-job token on every call,
// this rank's identity (job, rank, attempt), deadlines, and the classification of failures into
// "coordinator unreachable, retry" and "coordinator refused, stop".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/channel_arguments.h"
#include "kiln/v1/cluster_service.grpc.pb.h"
#include "worker/heartbeat_stream.h"

namespace kiln::worker {

// The channel settings every worker uses to reach kilnd (bench/control_plane's simulated workers
// use them too, so that they cost kilnd what real ones do).
grpc::ChannelArguments WorkerChannelArguments();

struct LinkOptions {
  std::string server;  // host:port of kilnd
  std::string token;   // the per-job worker token (KILN_WORKER_TOKEN)
  std::string tls_ca;  // PEM file to trust; empty = plaintext
  v1::WorkerRef worker;
  absl::Duration rpc_timeout = absl::Seconds(5);
  // A connection of its own even when another link in this process dials the same kilnd (gRPC
  // shares one per target otherwise). For bench/control_plane, which plays many workers at once.
  bool own_connection = false;
};

// UNAVAILABLE, DEADLINE_EXCEEDED and friends: kilnd may come back. Anything else means kilnd
// knows this worker and refuses it (a superseded attempt, a cancelled job, a bad token).
bool IsTransient(const absl::Status& status);

class CoordinatorLink {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorLink>> Create(const LinkOptions& options);

  absl::StatusOr<v1::Assignment> Register(bool reconnect);
  // On the link's heartbeat stream (Note [Heartbeat stream]). `timeout` bounds how long the loss
  // of kilnd can go unnoticed. Not thread-safe: one thread heartbeats.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(int64_t step, const std::string& phase,
                                                  absl::Duration timeout);
  absl::Status ReportMetrics(const std::vector<v1::MetricPoint>& points);
  absl::StatusOr<bool> ReportCheckpoint(int64_t step, const std::string& path);
  absl::Status ReportExit(int exit_code, const std::string& message);

  // For the key-value client: a context with the token and a deadline.
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) const;
  v1::ClusterService::Stub* stub() { return stub_.get(); }
  const v1::WorkerRef& worker() const { return options_.worker; }

 private:
  explicit CoordinatorLink(LinkOptions options) : options_(std::move(options)) {}

  LinkOptions options_;
  std::unique_ptr<v1::ClusterService::Stub> stub_;
  std::unique_ptr<HeartbeatStream> heartbeat_;  // after stub_: uses it until destroyed
};

absl::Status FromGrpc(const grpc::Status& status);

}  // namespace kiln::worker
