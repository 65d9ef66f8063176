// Heartbeats served on gRPC's asynchronous API by one dedicated thread. See Note [Heartbeat cost].
#pragma once

#include <memory>
#include <thread>

#include "grpcpp/server_builder.h"
#include "scheduler/cluster_service.h"
#include "scheduler/coordinator.h"
#include "scheduler/metrics.h"

namespace kiln::scheduler {

// Note [Heartbeat cost]
// Every worker calls Heartbeat every second, so its per-call cost is most of what kilnd spends when
// nothing else happens. The synchronous and callback server APIs hand each call from the thread
// that polled the socket to another thread; measured with 500 workers (bench/control_plane) that
// was four to seven context switches per heartbeat. Heartbeat is therefore served on the
// asynchronous API: one thread polls its own completion queue and answers inline, about one
// context switch per heartbeat, and (with Note [Health service]) roughly a fifth less CPU. What is
// left, about 0.15-0.2 ms of CPU per call on a small VM, is spread over gRPC's whole stack; the
// next step would be a streaming heartbeat. The handler itself is short: a token check and a few
// field updates under the coordinator's lock; nothing touches the disk. This only pays off if no
// other thread competes for the poller, which is why kilnd registers no callback-API service.

class HeartbeatServer {
 public:
  // Call before BuildAndStart: registers the completion queue with the builder.
  HeartbeatServer(grpc::ServerBuilder* builder, ClusterServiceImpl* service,
                  Coordinator* coordinator, Metrics* metrics);
  ~HeartbeatServer();

  // After BuildAndStart.
  void Start();
  // After the server's Shutdown: drains the queue and joins the thread.
  void Stop();

 private:
  class Call;
  void Loop();

  ClusterServiceImpl* service_;
  Coordinator* coordinator_;
  Metrics* metrics_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
};

}  // namespace kiln::scheduler
