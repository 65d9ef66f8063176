// Small POSIX TCP helpers for the store: listening, connecting with a deadline, reading and
// writing whole buffers with a deadline, and the length-prefixed frame format the TcpStore client
// and server speak. Every failure is an absl::Status that names the peer.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kiln::dist::net {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.Release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release();
  void Reset();

 private:
  int fd_ = -1;
};

// A listening TCP socket on host:port (port 0: the OS picks one). Returns the socket and the port.
absl::StatusOr<std::pair<Fd, int>> Listen(const std::string& host, int port);

// One connection attempt that gives up at `deadline` (non-blocking connect + poll). The returned
// socket is blocking with TCP_NODELAY set.
absl::StatusOr<Fd> ConnectOnce(const std::string& host, int port, absl::Time deadline);

// Writes or reads exactly `n` bytes before `deadline`. A peer that closes the connection gives
// Unavailable; the deadline gives DeadlineExceeded. `what` names the peer in messages.
absl::Status WriteAll(int fd, const char* data, size_t n, absl::Time deadline,
                      absl::string_view what);
absl::Status ReadAll(int fd, char* data, size_t n, absl::Time deadline, absl::string_view what);

// Frames: a little-endian u32 payload length, then the payload. Frames above kMaxFrameBytes are
// refused so that a garbage length cannot make a peer allocate gigabytes.
constexpr uint32_t kMaxFrameBytes = 256u << 20;
absl::Status WriteFrame(int fd, absl::string_view payload, absl::Time deadline,
                        absl::string_view what);
absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline, absl::string_view what);

// Encoding of the fields inside a frame.
void PutU8(std::string* out, uint8_t v);
void PutU32(std::string* out, uint32_t v);
void PutI64(std::string* out, int64_t v);
void PutBytes(std::string* out, absl::string_view bytes);  // u32 length + bytes

// Reads fields back; every getter returns false (and consumes nothing useful) when the input is
// too short, so a malformed message is detected rather than read past its end.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool I64(int64_t* v);
  bool Bytes(std::string* v);
  bool done() const { return data_.empty(); }

 private:
  absl::string_view data_;
};

uint32_t DecodeU32(const char* p);

}  // namespace kiln::dist::net
