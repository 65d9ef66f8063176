// The job API against a real kilnd with real workers: idempotent submission, the malformed-spec
// corpus refused with field paths while kilnd keeps serving, bounded inputs, authentication of
// users and of workers (per-job tokens), the workers' heartbeat stream, TLS to clients and workers,
// and the Prometheus endpoint.
#include <httplib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/integration/harness.h"
#include "tests/testing.h"
#include "worker/coordinator_link.h"

namespace kiln::testing {
namespace {

using v1::Job;

KilndOptions Options(const std::string& name) {
  KilndOptions o;
  o.state_dir = TempDir(name);
  o.slots = 2;
  o.grace_s = 3;
  return o;
}

grpc::Status Heartbeat(v1::ClusterService::Stub* stub, const std::string& token, const Job& job) {
  grpc::ClientContext context;
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::HeartbeatRequest request;
  request.mutable_worker()->set_job_id(job.id());
  request.mutable_worker()->set_rank(0);
  request.mutable_worker()->set_attempt(job.attempt());
  v1::HeartbeatResponse response;
  return stub->Heartbeat(&context, request, &response);
}

TEST_CASE("resubmitting with the same submission id returns the same job", "[integration][api]") {
  KilndOptions options = Options("idempotent");
  options.slots = 0;
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  const std::string spec = MlpJob(10);
  v1::SubmitJobRequest request;
  request.set_spec_yaml(spec);
  request.set_submission_id("retry-me");
  request.set_base_dir("/");
  auto first = client->Submit(request);
  auto second = client->Submit(request);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  CHECK(first->created());
  CHECK_FALSE(second->created());
  CHECK(first->job().id() == second->job().id());
  request.set_spec_yaml(MlpJob(11));
  auto different = client->Submit(request);
  REQUIRE_FALSE(different.ok());
  CHECK(absl::IsAlreadyExists(different.status()));
  auto jobs = client->ListJobs({});
  REQUIRE(jobs.ok());
  CHECK(jobs->size() == 1);
}

TEST_CASE("the malformed-spec corpus is refused with field paths while kilnd keeps serving",
          "[integration][api]") {
  KilndProcess kilnd(Options("corpus"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  const std::string dir = Runfile("tests/scheduler/specs/bad");
  int refused = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string text = ReadFile(entry.path());
    const std::string expected = text.substr(10, text.find('\n') - 10);  // after "# expect: "
    v1::SubmitJobRequest request;
    request.set_spec_yaml(text);
    request.set_base_dir("/jobs");
    auto r = client->Submit(request);
    INFO(entry.path().filename().string()
         << ": expected \"" << expected << "\", got " << r.status());
    REQUIRE_FALSE(r.ok());
    CHECK(absl::IsInvalidArgument(r.status()));
    CHECK(Contains(std::string(r.status().message()), expected));
    ++refused;
  }
  CHECK(refused >= 30);
  // Over the message limit (4 MiB): refused by gRPC, and kilnd is fine.
  v1::SubmitJobRequest huge;
  huge.set_spec_yaml(std::string(5 << 20, 'x'));
  auto r = client->Submit(huge);
  CHECK(absl::IsResourceExhausted(r.status()));
  // A spec the node cannot hold.
  auto too_big = Submit(client.get(), MlpJob(10, 3));
  REQUIRE_FALSE(too_big.ok());
  CHECK(Contains(std::string(too_big.status().message()),
                 "resources.workers: the job needs 3 workers but kilnd has 2 slots"));
  // Still serving.
  REQUIRE(client->Nodes().ok());
  auto good = Submit(client.get(), MlpJob(5));
  REQUIRE(good.ok());
  CHECK(WaitForState(client.get(), good->id(), v1::SUCCEEDED, absl::Seconds(90)).ok());
  CHECK(kilnd.running());
}

TEST_CASE("request fields are bounded", "[integration][api]") {
  KilndProcess kilnd(Options("bounds"));
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();
  CHECK(absl::IsInvalidArgument(client->GetJob("../../etc/passwd").status()));
  CHECK(absl::IsInvalidArgument(client->GetJob(std::string(100, '1')).status()));
  CHECK(absl::IsNotFound(client->GetJob("job-99").status()));
  v1::SubmitJobRequest request;
  request.set_spec_yaml(MlpJob(5));
  request.set_submission_id(std::string(200, 'a'));
  CHECK(absl::IsInvalidArgument(client->Submit(request).status()));
  request.set_submission_id("has space");
  CHECK(absl::IsInvalidArgument(client->Submit(request).status()));
  auto job = Submit(client.get(), MlpJob(5));
  REQUIRE(job.ok());
  v1::StreamLogsRequest logs;
  logs.set_job_id(job->id());
  logs.set_max_bytes(8 << 20);
  CHECK(
      absl::IsInvalidArgument(client->StreamLogs(logs, [](const v1::LogChunk&) { return true; })));
  logs.set_max_bytes(0);
  logs.set_rank(5);
  CHECK(
      absl::IsInvalidArgument(client->StreamLogs(logs, [](const v1::LogChunk&) { return true; })));
  CHECK(absl::IsInvalidArgument(client->Cancel(job->id(), 0, std::string(1000, 'r')).status()));
  CHECK(absl::IsInvalidArgument(client->Metrics(job->id(), 0, 1000000).status()));
}

TEST_CASE("with a token file, user calls need the token and workers need their job's token",
          "[integration][api]") {
  KilndOptions options = Options("auth");
  options.auth_token_file = options.state_dir + "/token";
  std::ofstream(options.auth_token_file) << "s3cret\n";
  chmod(options.auth_token_file.c_str(), 0600);
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto anonymous = kilnd.Client();
  auto wrong = kilnd.Client("guess");
  auto user = kilnd.Client("s3cret");
  CHECK(absl::IsUnauthenticated(anonymous->Nodes().status()));
  CHECK(absl::IsUnauthenticated(wrong->Nodes().status()));
  CHECK(absl::IsUnauthenticated(Submit(anonymous.get(), MlpJob(5)).status()));
  CHECK(absl::IsUnauthenticated(anonymous->ListJobs({}).status()));
  REQUIRE(user->Nodes().ok());

  auto a = Submit(user.get(), MlpJob(1000000));
  auto b = Submit(user.get(), MlpJob(1000000));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto ra = WaitForState(user.get(), a->id(), v1::RUNNING, absl::Seconds(60));
  auto rb = WaitForState(user.get(), b->id(), v1::RUNNING, absl::Seconds(60));
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  auto stub = kilnd.ClusterStub();
  const std::string token_a = WorkerToken(ra->ranks(0).pid());
  REQUIRE(token_a.size() == 64);
  CHECK(Heartbeat(stub.get(), token_a, *ra).ok());
  // Job a's token is worth nothing for job b, nor is the user token, nor no token.
  CHECK(Heartbeat(stub.get(), token_a, *rb).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(Heartbeat(stub.get(), "s3cret", *ra).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(Heartbeat(stub.get(), "", *ra).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token_a);
    v1::KvSetRequest set;
    set.mutable_worker()->set_job_id(b->id());
    set.mutable_worker()->set_attempt(1);
    set.set_key("k");
    v1::KvSetResponse response;
    CHECK(stub->Set(&context, set, &response).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  // Once its job ends, a worker token is void.
  REQUIRE(user->Cancel(a->id()).ok());
  REQUIRE(WaitForState(user.get(), a->id(), v1::CANCELLED, absl::Seconds(20)).ok());
  CHECK(Heartbeat(stub.get(), token_a, *ra).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  REQUIRE(user->Cancel(b->id()).ok());
  CHECK(WaitForState(user.get(), b->id(), v1::CANCELLED, absl::Seconds(20)).ok());
}

TEST_CASE("workers heartbeat on one stream: refusals keep their meaning, a frozen kilnd times out",
          "[integration][api]") {
  KilndOptions options = Options("heartbeat-stream");
  options.slots = 1;
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto user = kilnd.Client();
  auto job = Submit(user.get(), MlpJob(1000000));
  REQUIRE(job.ok());
  auto running = WaitForState(user.get(), job->id(), v1::RUNNING, absl::Seconds(60));
  REQUIRE(running.ok());
  // kiln-worker's own link, with the running worker's token, beside the worker itself.
  worker::LinkOptions link_options;
  link_options.server = kilnd.address();
  link_options.token = WorkerToken(running->ranks(0).pid());
  link_options.worker.set_job_id(job->id());
  link_options.worker.set_rank(0);
  link_options.worker.set_attempt(running->attempt());
  auto link = worker::CoordinatorLink::Create(link_options);
  REQUIRE(link.ok());
  for (int step = 1; step <= 3; ++step) {
    absl::StatusOr<v1::HeartbeatResponse> hb = (*link)->Heartbeat(step, "train", absl::Seconds(5));
    REQUIRE(hb.ok());
    CHECK_FALSE(hb->stop());
  }
  // kilnd's refusal ends a stream with its own status: a superseded attempt is told to stop
  // (not transient), and other streams are untouched.
  worker::LinkOptions stale_options = link_options;
  stale_options.worker.set_attempt(running->attempt() + 1);
  auto stale = worker::CoordinatorLink::Create(stale_options);
  REQUIRE(stale.ok());
  absl::Status refused = (*stale)->Heartbeat(1, "train", absl::Seconds(5)).status();
  CHECK(absl::IsFailedPrecondition(refused));
  CHECK_FALSE(worker::IsTransient(refused));
  CHECK((*link)->Heartbeat(4, "train", absl::Seconds(5)).ok());

  // A frozen kilnd: the heartbeat gives up at its deadline (the worker's grace counts from it),
  // as a transient error; once kilnd runs again the next heartbeat gets through on a new stream.
  kilnd.Freeze();
  const absl::Time start = absl::Now();
  absl::Status frozen = (*link)->Heartbeat(5, "train", absl::Milliseconds(500)).status();
  const absl::Duration waited = absl::Now() - start;
  kilnd.Thaw();
  INFO(frozen.ToString());
  CHECK(absl::IsDeadlineExceeded(frozen));
  CHECK(worker::IsTransient(frozen));
  CHECK(waited < absl::Seconds(3));  // 500 ms plus cancelling the call
  CHECK((*link)->Heartbeat(6, "train", absl::Seconds(5)).ok());

  // Cancel: the stream carries the stop request, then the token's end.
  REQUIRE(user->Cancel(job->id()).ok());
  absl::Status last;
  bool told_to_stop = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::HeartbeatResponse> hb = (*link)->Heartbeat(7, "train", absl::Seconds(5));
    if (!hb.ok()) {
      last = hb.status();
      break;
    }
    told_to_stop = told_to_stop || hb->stop();
    absl::SleepFor(absl::Milliseconds(50));
  }
  CHECK(told_to_stop);
  CHECK(absl::IsUnauthenticated(last));
  CHECK(WaitForState(user.get(), job->id(), v1::CANCELLED, absl::Seconds(20)).ok());
}

TEST_CASE("with a certificate, kilnd serves TLS to clients and to its workers",
          "[integration][api]") {
  KilndOptions options = Options("tls");
  options.tls_cert = options.state_dir + "/cert.pem";
  options.tls_key = options.state_dir + "/key.pem";
  const std::string openssl = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kilnd -addext "
      "subjectAltName=IP:127.0.0.1 -keyout ",
      options.tls_key, " -out ", options.tls_cert, " >/dev/null 2>&1");
  if (std::system(openssl.c_str()) != 0) KILN_SKIP("the openssl command is not available");
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  auto client = kilnd.Client();  // trusts the certificate
  REQUIRE(client->Nodes().ok());
  // A plaintext client cannot talk to it.
  client::ClientOptions plain;
  plain.server = kilnd.address();
  CHECK(absl::IsUnavailable((*client::KilnClient::Connect(plain))->Nodes().status()));
  // Workers are told to trust the same certificate: a two-rank job runs over TLS.
  auto job = Submit(client.get(), MlpJob(20, 2));
  REQUIRE(job.ok());
  auto done = WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(90));
  INFO(kilnd.Log());
  CHECK(done.ok());
}

TEST_CASE("the metrics endpoint serves Prometheus text", "[integration][api]") {
  KilndOptions options = Options("metrics");
  options.metrics = true;
  KilndProcess kilnd(options);
  REQUIRE(kilnd.Start().ok());
  REQUIRE(kilnd.metrics_port() > 0);
  auto client = kilnd.Client();
  auto job = Submit(client.get(), MlpJob(5));
  REQUIRE(job.ok());
  REQUIRE(WaitForState(client.get(), job->id(), v1::SUCCEEDED, absl::Seconds(90)).ok());
  httplib::Client http("127.0.0.1", kilnd.metrics_port());
  auto res = http.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(Contains(res->body, "kiln_jobs{state=\"RUNNING\"} 0"));
  CHECK(Contains(res->body, "kiln_jobs_submitted_total 1"));
  CHECK(Contains(res->body, "kiln_live_workers 0"));
  CHECK(Contains(res->body, "kiln_rpc_duration_seconds_count{method=\"SubmitJob\"} 1"));
  CHECK(Contains(res->body, "kiln_rpc_duration_seconds_bucket{method=\"Heartbeat\",le=\"+Inf\"}"));
  CHECK(Contains(res->body, "kiln_rpcs_total{method=\"Register\",code=\"OK\"} 1"));
  auto health = http.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

}  // namespace
}  // namespace kiln::testing
