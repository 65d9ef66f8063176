// KilnClient: channel setup from flags or environment, bearer token metadata, paging and streams.
#include "client/client.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace kiln::client {
namespace {

std::string FromEnv(const std::string& value, const char* name, const std::string& fallback) {
  if (!value.empty()) return value;
  const char* env = std::getenv(name);
  return env != nullptr && *env != '\0' ? std::string(env) : fallback;
}

// Hands each message of a server stream to `on_message` until the stream ends or it returns
// false (then the call is cancelled and counts as a success).
template <typename Message>
grpc::Status ReadStream(grpc::ClientContext* context, grpc::ClientReader<Message>* reader,
                        const std::function<bool(const Message&)>& on_message) {
  Message message;
  while (reader->Read(&message)) {
    if (!on_message(message)) {
      context->TryCancel();
      reader->Finish();
      return grpc::Status::OK;
    }
  }
  return reader->Finish();
}

}  // namespace

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

absl::StatusOr<std::unique_ptr<KilnClient>> KilnClient::Connect(ClientOptions options) {
  options.server = FromEnv(options.server, "KILN_SERVER", kDefaultServer);
  options.token = FromEnv(options.token, "KILN_TOKEN", "");
  options.tls_ca = FromEnv(options.tls_ca, "KILN_TLS_CA", "");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    std::ifstream in(options.tls_ca);
    if (!in) return absl::NotFoundError(absl::StrCat("--tls-ca ", options.tls_ca, ": cannot read"));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::unique_ptr<KilnClient> client(new KilnClient(options));
  client->channel_ = grpc::CreateCustomChannel(options.server, credentials, args);
  client->stub_ = v1::JobService::NewStub(client->channel_);
  return client;
}

bool KilnClient::WaitForServer(absl::Duration timeout) {
  return channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

std::unique_ptr<grpc::ClientContext> KilnClient::Context(bool unary) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  if (unary) context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  return context;
}

absl::Status KilnClient::Convert(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  const std::string& message = status.error_message();
  // kilnd's own UNAVAILABLE answers ("kilnd is draining ...") name kilnd; transport failures don't.
  if ((status.error_code() == grpc::StatusCode::UNAVAILABLE && message.rfind("kilnd", 0) != 0) ||
      (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
       message.find("Deadline") != std::string::npos)) {
    return absl::UnavailableError(absl::StrCat("cannot reach kilnd at ", options_.server));
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

absl::StatusOr<v1::SubmitJobResponse> KilnClient::Submit(const v1::SubmitJobRequest& request) {
  v1::SubmitJobResponse response;
  auto context = Context(true);
  absl::Status s = Convert(stub_->SubmitJob(context.get(), request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::Job> KilnClient::GetJob(const std::string& job_id, bool include_events) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  request.set_include_events(include_events);
  v1::Job job;
  auto context = Context(true);
  absl::Status s = Convert(stub_->GetJob(context.get(), request, &job));
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<std::vector<v1::Job>> KilnClient::ListJobs(const std::vector<v1::JobState>& states,
                                                          int limit) {
  std::vector<v1::Job> jobs;
  v1::ListJobsRequest request;
  for (v1::JobState s : states) request.add_states(s);
  request.set_page_size(1000);
  while (true) {
    v1::ListJobsResponse response;
    auto context = Context(true);
    absl::Status s = Convert(stub_->ListJobs(context.get(), request, &response));
    if (!s.ok()) return s;
    for (v1::Job& job : *response.mutable_jobs()) {
      if (limit > 0 && static_cast<int>(jobs.size()) >= limit) return jobs;
      jobs.push_back(std::move(job));
    }
    if (response.next_page_token().empty()) return jobs;
    request.set_page_token(response.next_page_token());
  }
}

absl::StatusOr<v1::Job> KilnClient::Cancel(const std::string& job_id, double grace_s,
                                           const std::string& reason) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_grace_s(grace_s);
  request.set_reason(reason);
  v1::Job job;
  auto context = Context(true);
  absl::Status s = Convert(stub_->CancelJob(context.get(), request, &job));
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<v1::GetJobMetricsResponse> KilnClient::Metrics(const std::string& job_id,
                                                              int64_t after_step, int max_points) {
  v1::GetJobMetricsRequest request;
  request.set_job_id(job_id);
  request.set_after_step(after_step);
  request.set_max_points(max_points);
  v1::GetJobMetricsResponse response;
  auto context = Context(true);
  absl::Status s = Convert(stub_->GetJobMetrics(context.get(), request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ListNodesResponse> KilnClient::Nodes() {
  v1::ListNodesResponse response;
  auto context = Context(true);
  absl::Status s = Convert(stub_->ListNodes(context.get(), v1::ListNodesRequest(), &response));
  if (!s.ok()) return s;
  return response;
}

absl::Status KilnClient::Watch(const std::string& job_id, bool history,
                               const std::function<bool(const v1::JobUpdate&)>& on_message,
                               int64_t after_event_seq) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_history(history);
  request.set_after_event_seq(after_event_seq);
  auto context = Context(false);
  return Convert(ReadStream(context.get(), stub_->WatchJob(context.get(), request).get(),
                            on_message));
}

absl::Status KilnClient::StreamLogs(const v1::StreamLogsRequest& request,
                                    const std::function<bool(const v1::LogChunk&)>& on_message) {
  auto context = Context(false);
  return Convert(ReadStream(context.get(), stub_->StreamLogs(context.get(), request).get(),
                            on_message));
}

}  // namespace kiln::client
