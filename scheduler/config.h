// kilnd's command line. Everything has a default so that a bare `kilnd` works: listen on
// 127.0.0.1:7070, state under ~/.kiln, one slot per GPU found (else per CPU core).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kiln::scheduler {

struct KilndConfig {
  std::string listen = "127.0.0.1:7070";
  std::string state_dir;  // default $HOME/.kiln
  int slots = 0;
  bool slots_given = false;  // --slots overrides detection (0 = queue only)
  std::string auth_token_file;
  std::string tls_cert;
  std::string tls_key;
  std::string metrics_listen;  // empty = no metrics endpoint
  double grace_s = 30;         // cancel/drain SIGTERM -> SIGKILL; worker coordinator-loss
  std::string worker_binary;   // default: kiln-worker next to kilnd (or ../worker/)
  std::string port_file;       // written with "grpc=<port>\nmetrics=<port>\n" once serving
  std::string log_level = "info";
  bool full_sync = true;  // --sync full (default) | normal; Note [Durability]
};

// Parses argv (--flag value or --flag=value). Returns NOT_FOUND with the usage text for --help.
absl::StatusOr<KilndConfig> ParseKilndFlags(int argc, char** argv);

std::string KilndUsage();

// Splits "host:port" ("[::1]:7070" too). Port 0 asks the OS for one.
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace kiln::scheduler
