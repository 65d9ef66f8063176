// Flag parsing for kilnd, with one-line errors for unknown flags and bad values.
#include "scheduler/config.h"

#include <cstdlib>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kiln::scheduler {

std::string KilndUsage() {
  return R"(usage: kilnd [flags]
  --listen HOST:PORT          gRPC address (default 127.0.0.1:7070; port 0 = any free port)
  --state-dir DIR             SQLite store, job logs and checkpoints (default ~/.kiln)
  --slots N                   worker slots (default: GPUs found, else CPU cores; 0 = queue only)
  --auth-token-file FILE      require `authorization: Bearer <token>` on the job API
  --tls-cert FILE --tls-key FILE   serve TLS
  --metrics-listen HOST:PORT  Prometheus /metrics over HTTP (default: off)
  --grace-s S                 cancel/drain grace before SIGKILL, and how long workers survive
                              without a coordinator (default 30)
  --worker-binary PATH        kiln-worker to launch (default: next to kilnd)
  --port-file FILE            write the bound ports there once serving
  --log-level LEVEL           debug | info | warn | error (default info)
  --sync full|normal          full (default): each commit is fsynced before kilnd answers;
                              normal: commits survive a kilnd crash, not an OS crash (faster)
)";
}

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" is not HOST:PORT"));
  }
  *host = address.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  if (!absl::SimpleAtoi(address.substr(colon + 1), port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" has a bad port"));
  }
  return absl::OkStatus();
}

absl::StatusOr<KilndConfig> ParseKilndFlags(int argc, char** argv) {
  KilndConfig c;
  if (const char* home = std::getenv("HOME"); home != nullptr) {
    c.state_dir = std::string(home) + "/.kiln";
  } else {
    c.state_dir = ".kiln";
  }
  using Setter = std::function<absl::Status(const std::string&)>;
  auto text = [](std::string* field) -> Setter {
    return [field](const std::string& v) {
      *field = v;
      return absl::OkStatus();
    };
  };
  std::map<std::string, Setter> flags = {
      {"listen", text(&c.listen)},
      {"state-dir", text(&c.state_dir)},
      {"auth-token-file", text(&c.auth_token_file)},
      {"tls-cert", text(&c.tls_cert)},
      {"tls-key", text(&c.tls_key)},
      {"metrics-listen", text(&c.metrics_listen)},
      {"worker-binary", text(&c.worker_binary)},
      {"port-file", text(&c.port_file)},
      {"log-level", text(&c.log_level)},
      {"slots",
       [&c](const std::string& v) {
         if (!absl::SimpleAtoi(v, &c.slots) || c.slots < 0 || c.slots > 65536) {
           return absl::InvalidArgumentError("--slots: expected 0..65536, got \"" + v + "\"");
         }
         c.slots_given = true;
         return absl::OkStatus();
       }},
      {"sync",
       [&c](const std::string& v) {
         if (v != "full" && v != "normal") {
           return absl::InvalidArgumentError("--sync: expected full or normal, got \"" + v + "\"");
         }
         c.full_sync = v == "full";
         return absl::OkStatus();
       }},
      {"grace-s",
       [&c](const std::string& v) {
         if (!absl::SimpleAtod(v, &c.grace_s) || !(c.grace_s > 0) || c.grace_s > 3600) {
           return absl::InvalidArgumentError("--grace-s: expected (0, 3600], got \"" + v + "\"");
         }
         return absl::OkStatus();
       }},
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return absl::NotFoundError(KilndUsage());
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    auto it = flags.find(name);
    if (it == flags.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (absl::Status s = it->second(value); !s.ok()) return s;
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(c.listen, &host, &port); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--listen: ", s.message()));
  }
  if (!c.metrics_listen.empty()) {
    if (absl::Status s = SplitHostPort(c.metrics_listen, &host, &port); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics-listen: ", s.message()));
    }
  }
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
      c.log_level != "error") {
    return absl::InvalidArgumentError("--log-level: expected debug, info, warn or error");
  }
  return c;
}

}  // namespace kiln::scheduler
