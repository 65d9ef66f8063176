// TcpStore client: a small pool of blocking connections, connect-with-back-off until the first
// success, and one request/reply round trip per call. See Note [Store host death].
#include "engine/dist/tcp_store.h"

#include <thread>

#include "absl/strings/str_cat.h"

namespace kiln::dist {

absl::StatusOr<std::unique_ptr<TcpStore>> TcpStore::Create(const TcpStoreOptions& options) {
  std::unique_ptr<TcpStoreServer> server;
  int port = options.port;
  if (options.is_host) {
    auto started = TcpStoreServer::Start(options.host, options.port);
    if (!started.ok()) return started.status();
    server = std::move(*started);
    port = server->port();
  } else if (port <= 0) {
    return absl::InvalidArgumentError("TcpStore client needs the host's port");
  }
  std::unique_ptr<TcpStore> store(new TcpStore(options, std::move(server), port));
  // Connect now so that a wrong address fails here rather than at the first Get.
  absl::StatusOr<net::Fd> fd = store->Connect(absl::Now() + options.connect_timeout);
  if (!fd.ok()) return fd.status();
  absl::MutexLock lock(&store->mu_);
  store->idle_.push_back(std::move(*fd));
  return store;
}

TcpStore::TcpStore(TcpStoreOptions options, std::unique_ptr<TcpStoreServer> server, int port)
    : options_(std::move(options)), server_(std::move(server)), port_(port) {}

TcpStore::~TcpStore() {
  {
    absl::MutexLock lock(&mu_);
    idle_.clear();
  }
  server_.reset();
}

std::string TcpStore::Peer() const {
  return absl::StrCat("store host ", options_.host, ":", port_);
}

absl::StatusOr<net::Fd> TcpStore::Connect(absl::Time deadline) {
  // "0.0.0.0" is a fine address to bind but not one to dial.
  const std::string host = options_.host == "0.0.0.0" ? "127.0.0.1" : options_.host;
  absl::Duration backoff = absl::Milliseconds(10);
  for (;;) {
    absl::StatusOr<net::Fd> fd = net::ConnectOnce(host, port_, deadline);
    if (fd.ok()) {
      absl::MutexLock lock(&mu_);
      ever_connected_ = true;
      return fd;
    }
    bool retry;
    {
      absl::MutexLock lock(&mu_);
      retry = !ever_connected_ && absl::IsUnavailable(fd.status());
    }
    if (!retry) {
      return absl::UnavailableError(absl::StrCat(Peer(), " is unreachable (", fd.status().message(),
                                                 "); the hosting rank has probably exited"));
    }
    if (absl::Now() + backoff > deadline) {
      return absl::UnavailableError(absl::StrCat("could not reach ", Peer(), " within ",
                                                 absl::FormatDuration(options_.connect_timeout),
                                                 ": ", fd.status().message()));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

absl::StatusOr<std::string> TcpStore::RoundTrip(const std::string& request, absl::string_view key,
                                                absl::Time deadline) {
  net::Fd fd;
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      fd = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!fd.valid()) {
    absl::StatusOr<net::Fd> connected =
        Connect(std::min(deadline, absl::Now() + options_.connect_timeout));
    if (!connected.ok()) return connected.status();
    fd = std::move(*connected);
  }
  const std::string what = Peer();
  absl::Status status = net::WriteFrame(fd.get(), request, deadline, what);
  absl::StatusOr<std::string> reply =
      status.ok() ? net::ReadFrame(fd.get(), deadline, what) : absl::StatusOr<std::string>(status);
  if (!reply.ok()) {
    // The connection is in an unknown state (a reply may still arrive): drop it.
    return absl::Status(reply.status().code(),
                        absl::StrCat(reply.status().message(), " (request for key '", key, "')"));
  }
  {
    absl::MutexLock lock(&mu_);
    idle_.push_back(std::move(fd));
  }
  net::Reader reader(*reply);
  uint32_t code = 0;
  if (!reader.U32(&code)) return absl::DataLossError(absl::StrCat(what, " sent an empty reply"));
  if (code != 0) {
    std::string message;
    reader.Bytes(&message);
    return absl::Status(static_cast<absl::StatusCode>(code), message);
  }
  return std::string(*reply).substr(4);
}

absl::Status TcpStore::Set(absl::string_view key, absl::string_view value) {
  std::string request;
  net::PutU8(&request, static_cast<uint8_t>(StoreOp::kSet));
  net::PutBytes(&request, key);
  net::PutBytes(&request, value);
  return RoundTrip(request, key, absl::Now() + options_.request_timeout).status();
}

absl::StatusOr<std::string> TcpStore::Get(absl::string_view key, absl::Duration timeout) {
  std::string request;
  net::PutU8(&request, static_cast<uint8_t>(StoreOp::kGet));
  net::PutBytes(&request, key);
  absl::StatusOr<std::string> reply = RoundTrip(request, key, absl::Now() + timeout);
  if (absl::IsDeadlineExceeded(reply.status())) return KeyTimeoutError(key, timeout);
  if (!reply.ok()) return reply.status();
  net::Reader reader(*reply);
  std::string value;
  if (!reader.Bytes(&value)) return absl::DataLossError(absl::StrCat(Peer(), " sent a bad reply"));
  return value;
}

absl::StatusOr<int64_t> TcpStore::Add(absl::string_view key, int64_t delta) {
  std::string request;
  net::PutU8(&request, static_cast<uint8_t>(StoreOp::kAdd));
  net::PutBytes(&request, key);
  net::PutI64(&request, delta);
  absl::StatusOr<std::string> reply =
      RoundTrip(request, key, absl::Now() + options_.request_timeout);
  if (!reply.ok()) return reply.status();
  net::Reader reader(*reply);
  int64_t value = 0;
  if (!reader.I64(&value)) return absl::DataLossError(absl::StrCat(Peer(), " sent a bad reply"));
  return value;
}

}  // namespace kiln::dist
