// The `kiln` verbs. Each takes the arguments after the verb and returns the process exit code:
// 0 ok (or the job SUCCEEDED), 1 an error or the job FAILED, 2 a usage error or an invalid spec,
// 3 the job was CANCELLED, 4 kilnd could not be reached.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/client.h"

namespace kiln::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitCancelled = 3;
inline constexpr int kExitUnreachable = 4;

struct CliContext {
  client::ClientOptions options;
  bool json = false;
  // Connects on first use.
  absl::StatusOr<client::KilnClient*> Client();

 private:
  std::unique_ptr<client::KilnClient> client_;
};

// Prints "kiln: <message>" on stderr and returns the matching exit code.
int Fail(const absl::Status& status);
int ExitCodeFor(v1::JobState state);

int RunSubmit(CliContext& ctx, const std::vector<std::string>& args);
int RunList(CliContext& ctx, const std::vector<std::string>& args);
int RunStatus(CliContext& ctx, const std::vector<std::string>& args);
int RunCancel(CliContext& ctx, const std::vector<std::string>& args);
int RunLogs(CliContext& ctx, const std::vector<std::string>& args);
int RunMetrics(CliContext& ctx, const std::vector<std::string>& args);
int RunNodes(CliContext& ctx, const std::vector<std::string>& args);

// Follows a job to its end (events, a live progress line) and returns ExitCodeFor(final state).
// Survives a kilnd restart by reconnecting for up to a minute.
int FollowJob(CliContext& ctx, const std::string& job_id);

}  // namespace kiln::cli
