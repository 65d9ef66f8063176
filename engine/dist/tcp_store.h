// TcpStore: the rendezvous Store for local multi-process runs (kiln-train --nproc N, tests,
// benchmarks). One rank hosts the server (TcpStoreServer) on a port it picks or is given; every
// rank, the host included, talks to it as a client over length-prefixed frames.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/dist/socket_util.h"
#include "engine/dist/store.h"
#include "engine/dist/tcp_store_server.h"

namespace kiln::dist {

struct TcpStoreOptions {
  // Server address. The host binds it (":0"-style port 0 lets the OS choose; read port()).
  std::string host = "127.0.0.1";
  int port = 0;
  bool is_host = false;
  // How long a client keeps retrying (with back-off) to reach a server that is not up yet.
  absl::Duration connect_timeout = absl::Seconds(60);
  // Deadline for Set and Add round trips.
  absl::Duration request_timeout = absl::Seconds(60);
};

// Note [Store host death]
// Clients retry refused connections only until they have reached the server once: before that
// the host may simply not be up yet; after that a refused connection means the host is gone, and
// the call fails at once with Unavailable. A Get blocked on the server sees the connection close
// when the host process dies and fails with Unavailable too, so no rank waits out its timeout on
// a dead store. A Get that times out drops its connection (the server forgets the waiter).
class TcpStore : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<TcpStore>> Create(const TcpStoreOptions& options);
  ~TcpStore() override;

  // The server's port (the one the OS chose when options.port was 0).
  int port() const { return port_; }

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

 private:
  TcpStore(TcpStoreOptions options, std::unique_ptr<TcpStoreServer> server, int port);
  // Sends one request and reads its reply, on a pooled connection (so threads sharing this
  // store never wait behind each other's blocking Get). `key` names the request in errors.
  absl::StatusOr<std::string> RoundTrip(const std::string& request, absl::string_view key,
                                        absl::Time deadline);
  absl::StatusOr<net::Fd> Connect(absl::Time deadline);
  std::string Peer() const;

  const TcpStoreOptions options_;
  std::unique_ptr<TcpStoreServer> server_;  // set on the host only
  const int port_;

  absl::Mutex mu_;
  std::vector<net::Fd> idle_ ABSL_GUARDED_BY(mu_);
  bool ever_connected_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kiln::dist
