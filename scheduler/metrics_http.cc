// MetricsHttpServer on cpp-httplib (Debian's libcpp-httplib, built with OpenSSL/zlib/brotli).
#include "scheduler/metrics_http.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "scheduler/config.h"

namespace kiln::scheduler {

MetricsHttpServer::MetricsHttpServer() = default;

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::StatusOr<int> MetricsHttpServer::Start(const std::string& address,
                                             std::function<std::string()> render,
                                             std::function<bool()> draining) {
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  server_ = std::make_unique<httplib::Server>();
  server_->Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->Get("/healthz", [draining](const httplib::Request&, httplib::Response& res) {
    const bool d = draining();
    res.status = d ? 503 : 200;
    res.set_content(d ? "draining\n" : "ok\n", "text/plain");
  });
  int bound = -1;
  if (port == 0) {
    bound = server_->bind_to_any_port(host);
  } else if (server_->bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen: cannot bind ", address));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void MetricsHttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace kiln::scheduler
