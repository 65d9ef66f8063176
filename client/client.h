// KilnClient: the C++ client of kilnd's JobService, used by the `kiln` CLI and by tests and
// benchmarks. Every call returns absl::Status; an unreachable kilnd reads "cannot reach kilnd at
// <address>" so that callers can print it as it is.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kiln/v1/job_service.grpc.pb.h"

namespace kiln::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:7070";

struct ClientOptions {
  std::string server;                          // empty: $KILN_SERVER, else 127.0.0.1:7070
  std::string token;                           // empty: $KILN_TOKEN, else none
  std::string tls_ca;                          // empty: $KILN_TLS_CA, else plaintext
  absl::Duration timeout = absl::Seconds(10);  // per unary call
};

class KilnClient {
 public:
  static absl::StatusOr<std::unique_ptr<KilnClient>> Connect(ClientOptions options);

  const std::string& server() const { return options_.server; }

  absl::StatusOr<v1::SubmitJobResponse> Submit(const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id, bool include_events = false);
  // Follows page tokens until `limit` jobs (0 = all).
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::vector<v1::JobState>& states,
                                                int limit = 0);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id, double grace_s = 0,
                                 const std::string& reason = "");
  absl::StatusOr<v1::GetJobMetricsResponse> Metrics(const std::string& job_id,
                                                    int64_t after_step = 0, int max_points = 0);
  absl::StatusOr<v1::ListNodesResponse> Nodes();

  // Streams: `on_message` returns false to stop early. The status is the stream's end.
  // `after_event_seq` > 0 resumes after that event (a watcher reconnecting).
  absl::Status Watch(const std::string& job_id, bool history,
                     const std::function<bool(const v1::JobUpdate&)>& on_message,
                     int64_t after_event_seq = 0);
  absl::Status StreamLogs(const v1::StreamLogsRequest& request,
                          const std::function<bool(const v1::LogChunk&)>& on_message);

  // Asks the channel to (re)connect and waits up to `timeout` for it; true once connected. Calls
  // fail fast while kilnd is down, and a channel that saw kilnd go away may keep failing fast
  // until something asks it to reconnect: followers call this before retrying.
  bool WaitForServer(absl::Duration timeout);

  // Converts a gRPC status, naming the server when it cannot be reached.
  absl::Status Convert(const grpc::Status& status) const;

 private:
  explicit KilnClient(ClientOptions options) : options_(std::move(options)) {}
  std::unique_ptr<grpc::ClientContext> Context(bool unary) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// Terminal states: SUCCEEDED, FAILED, CANCELLED.
bool IsTerminal(v1::JobState state);

}  // namespace kiln::client
