// Process: posix_spawn (safe from multi-threaded parents, unlike fork) with stdout and stderr
// redirected, and waitpid polling for deadlines.
#include "engine/dist/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace kiln::dist {

absl::StatusOr<Process> Process::Spawn(const ProcessOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("Process::Spawn needs argv[0]");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!options.output_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, options.output_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  std::vector<char*> argv;
  for (const std::string& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  for (const std::string& entry : options.env) env.push_back(const_cast<char*>(entry.c_str()));
  env.push_back(nullptr);

  pid_t pid = -1;
  const int rv = ::posix_spawn(&pid, argv[0], &actions, /*attrp=*/nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rv != 0) {
    return absl::InternalError(
        absl::StrCat("cannot start ", options.argv[0], ": ", std::strerror(rv)));
  }
  Process process;
  process.pid_ = pid;
  process.reaped_ = false;
  return process;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = other.pid_;
    reaped_ = other.reaped_;
    exit_code_ = other.exit_code_;
    other.pid_ = -1;
    other.reaped_ = true;
  }
  return *this;
}

Process::~Process() { KillAndReap(); }

void Process::KillAndReap() {
  if (reaped_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  if (reaped_) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(1);
  for (;;) {
    int status = 0;
    const pid_t rv = ::waitpid(pid_, &status, WNOHANG);
    if (rv == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (rv < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid(", pid_, "): ", std::strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
}

absl::Status Process::Signal(int signal) {
  if (reaped_) return absl::FailedPreconditionError("the process has already exited");
  if (::kill(pid_, signal) != 0) {
    return absl::InternalError(absl::StrCat("kill(", pid_, "): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string SelfExecutable() {
  char buffer[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "";
  return std::string(buffer, static_cast<size_t>(n));
}

}  // namespace kiln::dist
