// Child processes on this machine for multi-process runs (kiln-train --nproc N, multi-process
// tests, benchmarks): spawn with output captured to a file, wait with a deadline, send signals.
// A Process that goes out of scope while its child still runs kills and reaps it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kiln::dist {

struct ProcessOptions {
  std::vector<std::string> argv;  // argv[0] is the executable's path
  std::vector<std::string> env;   // "NAME=value" entries added to this process's environment
  std::string output_path;        // stdout and stderr go here; empty: inherit ours
};

class Process {
 public:
  static absl::StatusOr<Process> Spawn(const ProcessOptions& options);

  Process() = default;
  Process(Process&& other) noexcept { *this = std::move(other); }
  Process& operator=(Process&& other) noexcept;
  ~Process();

  pid_t pid() const { return pid_; }
  // The exit code (0..255), or 128 + the signal that ended it; DeadlineExceeded while it runs.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  absl::Status Signal(int signal);

 private:
  void KillAndReap();  // no-op once reaped

  pid_t pid_ = -1;
  bool reaped_ = true;
  int exit_code_ = 0;
};

// The path of the running executable (for binaries that launch copies of themselves).
std::string SelfExecutable();

}  // namespace kiln::dist
