// Heartbeats served on gRPC's asynchronous API by one dedicated thread: the unary Heartbeat and the
// long-lived HeartbeatStream that kiln-worker keeps open. See Note [Heartbeat cost].
#pragma once

#include <memory>
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/server_builder.h"
#include "scheduler/cluster_service.h"
#include "scheduler/coordinator.h"
#include "scheduler/metrics.h"

namespace kiln::scheduler {

// Note [Heartbeat cost]
// Every worker heartbeats every second, so a heartbeat's cost is most of what kilnd spends when
// nothing else happens. Three things keep it small:
//  - One thread polls its own completion queue and answers inline. The synchronous and callback
//    server APIs hand each call from the thread that polled the socket to another thread; measured
//    with 500 workers (bench/control_plane) that was four to seven context switches per heartbeat.
//    This only pays off if no other thread competes for the poller, which is why kilnd registers
//    no callback-API service.
//  - A stream per worker (HeartbeatStream), not a call per heartbeat. A unary call is a new HTTP/2
//    stream: HPACK headers with the path and the bearer token, a ServerContext, a call object and
//    a requested-call slot, trailers, and a stream close, about 0.15-0.2 ms of CPU on a small VM.
//    On an open stream a heartbeat is one small DATA frame each way. The token is read once per
//    stream but still checked against the job's current attempt on every message, so a superseded
//    worker is refused at its next heartbeat exactly as before.
//  - The handler is short: a token check and a few field updates under the coordinator's lock;
//    nothing touches the disk.
//
// A stream ends when its worker closes it or its connection breaks; kilnd pings every connection
// every 30 s (server.cc), so a worker lost without closing its socket does not hold a call forever.
// Shutdown: an open stream never ends by itself, so kilnd cancels every stream (CancelStreams)
// before the server's Shutdown, which would otherwise wait its whole deadline for them. The
// completion queue is shut down only once every call object has been deleted: an event for a call
// may still be in flight, and starting an operation (Finish) on a shut-down queue aborts.

class HeartbeatServer {
 public:
  // Call before BuildAndStart: registers the completion queue with the builder.
  HeartbeatServer(grpc::ServerBuilder* builder, ClusterServiceImpl* service,
                  Coordinator* coordinator, Metrics* metrics);
  ~HeartbeatServer();

  // After BuildAndStart.
  void Start();
  // Before the server's Shutdown: ends every open stream (workers see UNAVAILABLE and reconnect
  // to the next kilnd) and refuses streams that arrive from now on.
  void CancelStreams();
  // After the server's Shutdown: waits for the calls to end, drains the queue, joins the thread.
  void Stop();

 private:
  class Handler;
  class Call;
  class StreamCall;
  void Loop();
  bool Track(StreamCall* stream);  // false once closing: refuse the stream
  void Untrack(StreamCall* stream);

  ClusterServiceImpl* service_;
  Coordinator* coordinator_;
  Metrics* metrics_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;

  absl::Mutex mu_;
  int handlers_ ABSL_GUARDED_BY(mu_) = 0;  // live Call and StreamCall objects
  std::set<StreamCall*> streams_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kiln::scheduler
