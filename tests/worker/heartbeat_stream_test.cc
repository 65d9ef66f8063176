// The worker's heartbeat stream against servers that are not today's kilnd: an older coordinator
// that serves only the unary Heartbeat (the stream's UNIMPLEMENTED falls back to unary calls, with
// the token still sent), and no coordinator at all (a transient error within the deadline). The
// streaming path against the real kilnd is tested in tests/integration/api_test.cc.
#include <atomic>
#include <memory>
#include <string>

#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/security/server_credentials.h"
#include "kiln/v1/cluster_service.grpc.pb.h"
#include "tests/testing.h"
#include "worker/coordinator_link.h"

namespace kiln::testing {
namespace {

// ClusterService with the unary Heartbeat only, as kilnd served it before HeartbeatStream.
class UnaryOnlyCoordinator final : public v1::ClusterService::Service {
 public:
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    const auto auth = context->client_metadata().find("authorization");
    if (auth == context->client_metadata().end() ||
        std::string(auth->second.data(), auth->second.size()) != "Bearer tok") {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad token");
    }
    last_step = request->step();
    response->set_stop(calls.fetch_add(1) + 1 >= 3);  // the third heartbeat asks for a stop
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  std::atomic<int64_t> last_step{-1};
};

worker::LinkOptions Link(const std::string& server) {
  worker::LinkOptions o;
  o.server = server;
  o.token = "tok";
  o.worker.set_job_id("job-1");
  o.worker.set_rank(0);
  o.worker.set_attempt(1);
  return o;
}

TEST_CASE("a coordinator without HeartbeatStream gets unary heartbeats", "[worker]") {
  UnaryOnlyCoordinator service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  auto link = worker::CoordinatorLink::Create(Link("127.0.0.1:" + std::to_string(port)));
  REQUIRE(link.ok());
  for (int step = 1; step <= 3; ++step) {
    absl::StatusOr<v1::HeartbeatResponse> hb = (*link)->Heartbeat(step, "train", absl::Seconds(5));
    REQUIRE(hb.ok());
    CHECK(service.calls.load() == step);  // every heartbeat reached the unary method
    CHECK(service.last_step.load() == step);
    CHECK(hb->stop() == (step == 3));
  }
  server->Shutdown();
}

TEST_CASE("with no coordinator, a heartbeat fails as transient within its deadline", "[worker]") {
  // A port nothing listens on: bind one, note it, close it.
  int port = 0;
  {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    UnaryOnlyCoordinator unused;
    builder.RegisterService(&unused);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    REQUIRE(server != nullptr);
    server->Shutdown();
  }
  auto link = worker::CoordinatorLink::Create(Link("127.0.0.1:" + std::to_string(port)));
  REQUIRE(link.ok());
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second opens a new stream
    const absl::Time start = absl::Now();
    absl::Status s = (*link)->Heartbeat(1, "train", absl::Milliseconds(300)).status();
    INFO(s.ToString());
    CHECK_FALSE(s.ok());
    CHECK(worker::IsTransient(s));
    CHECK(absl::Now() - start < absl::Seconds(3));  // the deadline, plus cancelling the call
  }
}

}  // namespace
}  // namespace kiln::testing
