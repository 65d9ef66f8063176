// The Prometheus endpoint: a small HTTP server (cpp-httplib) answering GET /metrics with the text
// exposition format, and GET /healthz with "ok" or "draining".
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace kiln::scheduler {

class MetricsHttpServer {
 public:
  MetricsHttpServer();
  ~MetricsHttpServer();

  // Binds `host:port` (port 0 = any) and serves on a background thread; returns the bound port.
  absl::StatusOr<int> Start(const std::string& address, std::function<std::string()> render,
                            std::function<bool()> draining);
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace kiln::scheduler
