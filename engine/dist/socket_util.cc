// POSIX socket helpers with deadlines (poll before every read/write) and the frame codec.
#include "engine/dist/socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kiln::dist::net {
namespace {

std::string Errno(int err) { return std::strerror(err); }

int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  // Round up so that a sub-millisecond remainder still waits.
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits until `fd` is ready for `events`; false once the deadline passed.
absl::StatusOr<bool> PollFor(int fd, short events, absl::Time deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    const int rv = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (rv < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("poll: ", Errno(errno)));
    }
    if (rv == 0) return false;
    return true;
  }
}

absl::StatusOr<addrinfo*> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  const std::string port_text = std::to_string(port);
  const int rv =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(), &hints, &result);
  if (rv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", host, "': ", ::gai_strerror(rv)));
  }
  return result;
}

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = o.Release();
  }
  return *this;
}

int Fd::Release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Fd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

absl::StatusOr<std::pair<Fd, int>> Listen(const std::string& host, int port) {
  absl::StatusOr<addrinfo*> resolved = Resolve(host, port, /*passive=*/true);
  if (!resolved.ok()) return resolved.status();
  std::string last_error = "no address";
  for (addrinfo* ai = *resolved; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last_error = absl::StrCat("socket: ", Errno(errno));
      continue;
    }
    const int on = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 128) != 0) {
      last_error = absl::StrCat("bind/listen: ", Errno(errno));
      continue;
    }
    sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    const int bound_port = addr.ss_family == AF_INET6
                               ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                               : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    ::freeaddrinfo(*resolved);
    return std::make_pair(std::move(fd), bound_port);
  }
  ::freeaddrinfo(*resolved);
  return absl::UnavailableError(
      absl::StrCat("cannot listen on ", host, ":", port, ": ", last_error));
}

absl::StatusOr<Fd> ConnectOnce(const std::string& host, int port, absl::Time deadline) {
  absl::StatusOr<addrinfo*> resolved = Resolve(host, port, /*passive=*/false);
  if (!resolved.ok()) return resolved.status();
  std::string last_error = "no address";
  for (addrinfo* ai = *resolved; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last_error = absl::StrCat("socket: ", Errno(errno));
      continue;
    }
    int rv = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (rv != 0 && errno == EINPROGRESS) {
      absl::StatusOr<bool> ready = PollFor(fd.get(), POLLOUT, deadline);
      if (!ready.ok()) {
        ::freeaddrinfo(*resolved);
        return ready.status();
      }
      if (!*ready) {
        last_error = "connect timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      rv = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rv != 0) {
      last_error = Errno(errno);
      continue;
    }
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    const int on = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    ::freeaddrinfo(*resolved);
    return fd;
  }
  ::freeaddrinfo(*resolved);
  return absl::UnavailableError(
      absl::StrCat("cannot connect to ", host, ":", port, ": ", last_error));
}

absl::Status WriteAll(int fd, const char* data, size_t n, absl::Time deadline,
                      absl::string_view what) {
  while (n > 0) {
    absl::StatusOr<bool> ready = PollFor(fd, POLLOUT, deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return absl::DeadlineExceededError(absl::StrCat("timed out writing to ", what));
    const ssize_t rv = ::send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (rv < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(absl::StrCat("write to ", what, " failed: ", Errno(errno)));
    }
    data += rv;
    n -= static_cast<size_t>(rv);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* data, size_t n, absl::Time deadline, absl::string_view what) {
  while (n > 0) {
    absl::StatusOr<bool> ready = PollFor(fd, POLLIN, deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return absl::DeadlineExceededError(absl::StrCat("timed out reading from ", what));
    const ssize_t rv = ::recv(fd, data, n, MSG_DONTWAIT);
    if (rv == 0) return absl::UnavailableError(absl::StrCat(what, " closed the connection"));
    if (rv < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(absl::StrCat("read from ", what, " failed: ", Errno(errno)));
    }
    data += rv;
    n -= static_cast<size_t>(rv);
  }
  return absl::OkStatus();
}

uint32_t DecodeU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) |
         (static_cast<uint32_t>(u[2]) << 16) | (static_cast<uint32_t>(u[3]) << 24);
}

absl::Status WriteFrame(int fd, absl::string_view payload, absl::Time deadline,
                        absl::string_view what) {
  std::string frame;
  frame.reserve(4 + payload.size());
  PutU32(&frame, static_cast<uint32_t>(payload.size()));
  frame.append(payload.data(), payload.size());
  return WriteAll(fd, frame.data(), frame.size(), deadline, what);
}

absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline, absl::string_view what) {
  char header[4];
  absl::Status status = ReadAll(fd, header, 4, deadline, what);
  if (!status.ok()) return status;
  const uint32_t length = DecodeU32(header);
  if (length > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat(what, " sent a frame of ", length, " bytes"));
  }
  std::string payload(length, '\0');
  status = ReadAll(fd, payload.data(), length, deadline, what);
  if (!status.ok()) return status;
  return payload;
}

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutI64(std::string* out, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void PutBytes(std::string* out, absl::string_view bytes) {
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes.data(), bytes.size());
}

bool Reader::U8(uint8_t* v) {
  if (data_.size() < 1) return false;
  *v = static_cast<uint8_t>(data_[0]);
  data_.remove_prefix(1);
  return true;
}

bool Reader::U32(uint32_t* v) {
  if (data_.size() < 4) return false;
  *v = DecodeU32(data_.data());
  data_.remove_prefix(4);
  return true;
}

bool Reader::I64(int64_t* v) {
  if (data_.size() < 8) return false;
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) {
    u |= static_cast<uint64_t>(static_cast<unsigned char>(data_[i])) << (8 * i);
  }
  *v = static_cast<int64_t>(u);
  data_.remove_prefix(8);
  return true;
}

bool Reader::Bytes(std::string* v) {
  uint32_t n = 0;
  if (!U32(&n) || data_.size() < n) return false;
  v->assign(data_.data(), n);
  data_.remove_prefix(n);
  return true;
}

}  // namespace kiln::dist::net
