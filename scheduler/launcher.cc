// fork/exec of workers with everything the child needs prepared before fork (only async-signal-safe
// calls run between fork and exec), plus reaping, /proc probing and group signalling.
#include "scheduler/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace kiln::scheduler {
namespace {

// KEY=VALUE strings: kilnd's environment (plus defaults) with `extra` overriding by key.
std::vector<std::string> MergeEnv(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    env[entry.substr(0, entry.find('='))] = entry;
  }
  // Workers start with passive OpenMP waiting unless the operator chose a policy: kiln-worker
  // would otherwise re-exec itself to get it (Note [OpenMP wait policy], engine/core/parallel.h),
  // loading every shared library, CUDA's included, twice.
  env.emplace("OMP_WAIT_POLICY", "OMP_WAIT_POLICY=passive");
  for (const std::string& entry : extra) env[entry.substr(0, entry.find('='))] = entry;
  std::vector<std::string> out;
  for (auto& [key, entry] : env) out.push_back(std::move(entry));
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// In the child: never returns. Only async-signal-safe calls.
[[noreturn]] void ExecChild(pid_t parent, int log_fd, int null_fd, const char* cwd,
                            const char* binary, char* const* argv, char* const* envp) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGUSR1);
  if (getppid() != parent) _exit(126);  // kilnd died between fork and prctl
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);  // kilnd blocks its shutdown signals; workers must not
  signal(SIGPIPE, SIG_DFL);
  dup2(null_fd, STDIN_FILENO);
  dup2(log_fd, STDOUT_FILENO);
  dup2(log_fd, STDERR_FILENO);
  // Close everything else: the state-dir lock, listening sockets, the database.
  if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
    for (int fd = 3; fd < 65536; ++fd) close(fd);
  }
  static constexpr char kNoCwd[] = "kiln: cannot enter the worker's directory\n";
  static constexpr char kNoExec[] = "kiln: cannot execute the worker binary ";
  if (cwd[0] != '\0' && chdir(cwd) != 0) {
    (void)!write(STDERR_FILENO, kNoCwd, sizeof(kNoCwd) - 1);
    _exit(127);
  }
  execve(binary, argv, envp);
  (void)!write(STDERR_FILENO, kNoExec, sizeof(kNoExec) - 1);
  (void)!write(STDERR_FILENO, binary, strlen(binary));
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(127);
}

}  // namespace

absl::StatusOr<Launched> Launch(const LaunchRequest& request) {
  std::vector<std::string> argv_strings = {request.binary};
  argv_strings.insert(argv_strings.end(), request.args.begin(), request.args.end());
  std::vector<std::string> env_strings = MergeEnv(request.env);
  std::vector<char*> argv = CStrings(argv_strings);
  std::vector<char*> envp = CStrings(env_strings);

  const int log_fd =
      open(request.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open log ", request.log_path, ": ", std::strerror(errno)));
  }
  if (!request.header.empty()) {
    const std::string line = request.header + "\n";
    (void)!write(log_fd, line.data(), line.size());
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    ExecChild(parent, log_fd, null_fd, request.cwd.c_str(), request.binary.c_str(), argv.data(),
              envp.data());
  }
  const int fork_errno = errno;
  close(log_fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", std::strerror(fork_errno)));
  }
  // Also set the group from the parent, so that signalling the group works even before the child
  // has run (the race is benign: both calls set the same group).
  setpgid(pid, pid);
  Launched out;
  out.pid = pid;
  out.start_time = ProcessStartTime(pid);
  return out;
}

std::vector<Exited> ReapExited() {
  std::vector<Exited> out;
  while (true) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    Exited e;
    e.pid = pid;
    if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
    out.push_back(e);
  }
  return out;
}

namespace {

// Fields of /proc/<pid>/stat after the command name: state is [0], start time is [19].
bool ReadStat(pid_t pid, char* state, int64_t* start_time) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  if (!in) return false;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close_paren = content.rfind(')');
  if (close_paren == std::string::npos) return false;
  std::istringstream fields(content.substr(close_paren + 2));
  std::string field;
  for (int i = 0; i < 20 && fields >> field; ++i) {
    if (i == 0) *state = field.empty() ? '?' : field[0];
    if (i == 19) *start_time = std::stoll(field);
  }
  return true;
}

}  // namespace

int64_t ProcessStartTime(pid_t pid) {
  char state = '?';
  int64_t start = 0;
  return ReadStat(pid, &state, &start) ? start : 0;
}

bool ProcessAlive(pid_t pid, int64_t start_time) {
  if (pid <= 0) return false;
  char state = '?';
  int64_t start = 0;
  if (!ReadStat(pid, &state, &start)) return false;
  if (state == 'Z' || state == 'X') return false;
  return start_time == 0 || start == start_time;
}

void SignalGroup(pid_t pid, int64_t start_time, int signal) {
  if (pid <= 1) return;
  // A pid is never reused while a process group with that id exists, so if the leader is gone the
  // group id still names our group (or nothing). Only a live process with another start time
  // means the pid was recycled after our whole group ended: leave it alone.
  char state = '?';
  int64_t start = 0;
  if (ReadStat(pid, &state, &start) && start_time != 0 && start != start_time) return;
  kill(-pid, signal);
  if (signal == SIGTERM || signal == SIGKILL) kill(-pid, SIGCONT);
}

}  // namespace kiln::scheduler
