// TcpStoreServer: a single-threaded poll(2) loop over the listening socket, a wake-up pipe and
// non-blocking client sockets with per-client input and output buffers.
#include "engine/dist/tcp_store_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/dist/store.h"

namespace kiln::dist {
namespace {

std::string ErrorReply(const absl::Status& status) {
  std::string reply;
  net::PutU32(&reply, static_cast<uint32_t>(status.code()));
  net::PutBytes(&reply, status.message());
  return reply;
}

std::string OkReply() {
  std::string reply;
  net::PutU32(&reply, 0);
  return reply;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host,
                                                                      int port) {
  auto listening = net::Listen(host, port);
  if (!listening.ok()) return listening.status();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  ::fcntl(listening->first.get(), F_SETFL, O_NONBLOCK);
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(
      std::move(listening->first), listening->second, net::Fd(pipe_fds[0]), net::Fd(pipe_fds[1])));
}

TcpStoreServer::TcpStoreServer(net::Fd listener, int port, net::Fd wake_read, net::Fd wake_write)
    : listener_(std::move(listener)),
      port_(port),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)) {
  thread_ = std::thread([this] { Serve(); });
}

TcpStoreServer::~TcpStoreServer() {
  stop_ = true;
  const char byte = 0;
  (void)!::write(wake_write_.get(), &byte, 1);
  thread_.join();
}

void TcpStoreServer::Serve() {
  std::vector<pollfd> fds;
  std::vector<int> ids;  // client id per entry of `fds` after the first two
  while (!stop_) {
    fds.clear();
    ids.clear();
    fds.push_back({listener_.get(), POLLIN, 0});
    fds.push_back({wake_read_.get(), POLLIN, 0});
    for (auto& [id, client] : clients_) {
      const short events = client.out.empty() ? POLLIN : (POLLIN | POLLOUT);
      fds.push_back({client.fd.get(), events, 0});
      ids.push_back(id);
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;  // poll itself failed: nothing sensible left to do
    }
    if (fds[0].revents & POLLIN) Accept();
    for (size_t i = 2; i < fds.size(); ++i) {
      const int id = ids[i - 2];
      auto it = clients_.find(id);
      if (it == clients_.end()) continue;
      bool alive = true;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) alive = ReadFrom(it->second, id);
      if (alive && (fds[i].revents & POLLOUT)) alive = Flush(it->second);
      if (!alive) clients_.erase(id);
    }
    for (auto it = clients_.begin(); it != clients_.end();) {
      it = it->second.dead ? clients_.erase(it) : std::next(it);
    }
  }
}

void TcpStoreServer::Accept() {
  for (;;) {
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN (no more pending) or a transient error
    Client client;
    client.fd = net::Fd(fd);
    clients_.emplace(next_id_++, std::move(client));
  }
}

bool TcpStoreServer::ReadFrom(Client& client, int id) {
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t rv = ::recv(client.fd.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
    if (rv == 0) return false;
    if (rv < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;
    }
    client.in.append(buffer, static_cast<size_t>(rv));
  }
  // Handle every complete frame.
  size_t consumed = 0;
  while (client.in.size() - consumed >= 4) {
    const uint32_t length = net::DecodeU32(client.in.data() + consumed);
    if (length > net::kMaxFrameBytes) return false;
    if (client.in.size() - consumed - 4 < length) break;
    const std::string payload = client.in.substr(consumed + 4, length);
    consumed += 4 + length;
    if (!Handle(id, payload)) return false;
  }
  client.in.erase(0, consumed);
  return true;
}

bool TcpStoreServer::Handle(int id, const std::string& payload) {
  net::Reader reader(payload);
  uint8_t op = 0;
  std::string key;
  if (!reader.U8(&op) || !reader.Bytes(&key)) return false;
  switch (static_cast<StoreOp>(op)) {
    case StoreOp::kSet: {
      std::string value;
      if (!reader.Bytes(&value) || !reader.done()) return false;
      values_[key] = std::move(value);
      Reply(id, OkReply());
      WakeWaiters(key);
      return true;
    }
    case StoreOp::kGet: {
      if (!reader.done()) return false;
      auto it = values_.find(key);
      if (it == values_.end()) {
        waiters_[key].push_back(id);
        return true;
      }
      std::string reply = OkReply();
      net::PutBytes(&reply, it->second);
      Reply(id, reply);
      return true;
    }
    case StoreOp::kAdd: {
      int64_t delta = 0;
      if (!reader.I64(&delta) || !reader.done()) return false;
      std::string& value = values_[key];
      absl::StatusOr<int64_t> current = ParseCounter(key, value);
      if (!current.ok()) {
        Reply(id, ErrorReply(current.status()));
        return true;
      }
      value = absl::StrCat(*current + delta);
      std::string reply = OkReply();
      net::PutI64(&reply, *current + delta);
      Reply(id, reply);
      WakeWaiters(key);
      return true;
    }
  }
  return false;  // unknown op
}

void TcpStoreServer::WakeWaiters(const std::string& key) {
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  std::string reply = OkReply();
  net::PutBytes(&reply, values_[key]);
  for (int waiter : it->second) Reply(waiter, reply);
  waiters_.erase(it);
}

void TcpStoreServer::Reply(int id, const std::string& payload) {
  auto it = clients_.find(id);
  if (it == clients_.end() || it->second.dead) return;  // the client left while it waited
  net::PutU32(&it->second.out, static_cast<uint32_t>(payload.size()));
  it->second.out += payload;
  if (!Flush(it->second)) it->second.dead = true;
}

bool TcpStoreServer::Flush(Client& client) {
  while (!client.out.empty()) {
    const ssize_t rv =
        ::send(client.fd.get(), client.out.data(), client.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (rv < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;  // poll for POLLOUT
      return false;
    }
    client.out.erase(0, static_cast<size_t>(rv));
  }
  return true;
}

}  // namespace kiln::dist
