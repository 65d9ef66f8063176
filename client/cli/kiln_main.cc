// kiln: the command-line client of kilnd. Global flags (--server, --token, --tls-ca, --json) may
// appear anywhere; the server and token also come from KILN_SERVER and KILN_TOKEN.
#include <cstdio>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"

namespace kiln::cli {
namespace {

constexpr char kUsage[] =
    R"(usage: kiln [--server HOST:PORT] [--token T] [--tls-ca FILE] [--json] VERB ...

verbs:
  submit -f job.yaml [--follow] [--name N] [--priority P] [--submission-id ID]
  list [--state S[,S]] [--limit N]
  status JOB [--events N] [--follow]
  logs JOB [-f] [--rank R] [--offset BYTES]
  cancel JOB [--grace S] [--reason TEXT] [--no-wait]
  metrics JOB [--csv] [--since STEP] [--limit N]
  nodes

--server defaults to $KILN_SERVER, then 127.0.0.1:7070; --token to $KILN_TOKEN; --tls-ca to
$KILN_TLS_CA. --json prints proto JSON (field names as in proto/kiln/v1) on every verb.
exit codes: 0 ok / job SUCCEEDED, 1 error / job FAILED, 2 usage or invalid spec,
            3 job CANCELLED, 4 kilnd unreachable
)";

}  // namespace

absl::StatusOr<client::KilnClient*> CliContext::Client() {
  if (client_ == nullptr) {
    absl::StatusOr<std::unique_ptr<client::KilnClient>> c = client::KilnClient::Connect(options);
    if (!c.ok()) return c.status();
    client_ = *std::move(c);
  }
  return client_.get();
}

int Fail(const absl::Status& status) {
  std::cout.flush();
  std::fprintf(stderr, "kiln: %s\n", std::string(status.message()).c_str());
  if (absl::IsInvalidArgument(status)) return kExitUsage;
  if (absl::IsUnavailable(status) && status.message().rfind("cannot reach kilnd", 0) == 0) {
    return kExitUnreachable;
  }
  return kExitError;
}

int ExitCodeFor(v1::JobState state) {
  switch (state) {
    case v1::SUCCEEDED:
      return kExitOk;
    case v1::CANCELLED:
      return kExitCancelled;
    default:
      return kExitError;
  }
}

int Main(int argc, char** argv) {
  // Pull the global flags out; everything else goes to the verb.
  std::vector<std::string> rest;
  CliContext ctx;
  std::string verb;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name, std::string* out) {
      if (arg == "--" + name && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      if (arg.rfind("--" + name + "=", 0) == 0) {
        *out = arg.substr(name.size() + 3);
        return true;
      }
      return false;
    };
    if (value("server", &ctx.options.server) || value("token", &ctx.options.token) ||
        value("tls-ca", &ctx.options.tls_ca)) {
      continue;
    }
    if (arg == "--json") {
      ctx.json = true;
    } else if (arg == "--help" || arg == "-h" || arg == "help") {
      std::cout << kUsage;
      return kExitOk;
    } else if (verb.empty() && !arg.empty() && arg[0] != '-') {
      verb = arg;
    } else {
      rest.push_back(arg);
    }
  }
  static const std::map<std::string, int (*)(CliContext&, const std::vector<std::string>&)> verbs =
      {{"submit", RunSubmit}, {"list", RunList},       {"status", RunStatus}, {"cancel", RunCancel},
       {"logs", RunLogs},     {"metrics", RunMetrics}, {"nodes", RunNodes}};
  auto it = verbs.find(verb);
  if (it == verbs.end()) {
    std::fputs(kUsage, stderr);
    if (!verb.empty()) std::fprintf(stderr, "kiln: unknown verb \"%s\"\n", verb.c_str());
    return kExitUsage;
  }
  return it->second(ctx, rest);
}

}  // namespace kiln::cli

int main(int argc, char** argv) { return kiln::cli::Main(argc, argv); }
