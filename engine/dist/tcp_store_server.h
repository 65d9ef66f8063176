// The server half of TcpStore: one thread multiplexing every client with poll(2). It keeps the
// key-value map, parks Get requests for keys not yet set and answers them when a Set or Add
// arrives. Malformed input closes that client's connection and nothing else.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dist/socket_util.h"

namespace kiln::dist {

// Wire format (inside net:: frames). Requests: u8 op, bytes key, then op-specific fields:
//   kSet: bytes value   kGet: -   kAdd: i64 delta
// Replies: u32 absl status code (0 = ok), then bytes value (kGet), i64 (kAdd), or bytes message
// (errors). A kGet for a missing key is answered only once the key is set.
enum class StoreOp : uint8_t { kSet = 1, kGet = 2, kAdd = 3 };

class TcpStoreServer {
 public:
  // Listens on host:port (port 0: the OS chooses) and starts the serving thread.
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port);
  ~TcpStoreServer();  // stops the thread and closes every connection

  int port() const { return port_; }

 private:
  struct Client {
    net::Fd fd;
    std::string in;     // bytes received, not yet a whole frame
    std::string out;    // replies not yet written
    bool dead = false;  // a write failed; dropped at the end of the poll round
  };

  TcpStoreServer(net::Fd listener, int port, net::Fd wake_read, net::Fd wake_write);
  void Serve();
  void Accept();
  // Reads what is available; false when the client is gone or sent garbage.
  bool ReadFrom(Client& client, int id);
  bool Handle(int id, const std::string& payload);
  void Reply(int id, const std::string& payload);
  bool Flush(Client& client);
  void WakeWaiters(const std::string& key);

  net::Fd listener_;
  const int port_;
  net::Fd wake_read_, wake_write_;  // a pipe that interrupts poll() on shutdown
  std::atomic<bool> stop_{false};
  std::thread thread_;

  // Touched only by the serving thread.
  int next_id_ = 0;
  std::map<int, Client> clients_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<int>> waiters_;  // key -> ids of clients blocked in Get
};

}  // namespace kiln::dist
