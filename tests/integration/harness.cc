// The kilnd child process, worker process checks and the kiln CLI runner used by the integration
// tests (job specs and job inspection are in harness_jobs.cc).
#include "tests/integration/harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "tests/testing.h"

namespace kiln::testing {

std::string KilndBinary() { return Runfile("scheduler/kilnd"); }
std::string WorkerBinary() { return Runfile("worker/kiln-worker"); }
std::string DataBinary() { return Runfile("worker/kiln-data"); }
std::string CliBinary() { return Runfile("client/cli/kiln"); }
std::string TrainBinary() { return Runfile("worker/kiln-train"); }

std::string WorkerToken(pid_t pid) {
  const std::string env = ReadFile(absl::StrCat("/proc/", pid, "/environ"));
  const std::string key = "KILN_WORKER_TOKEN=";
  size_t at = env.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  return env.substr(at, env.find('\0', at) - at);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

KilndProcess::~KilndProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

std::string KilndProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string KilndProcess::Log() const { return ReadFile(log_path()); }

absl::Status KilndProcess::Start() {
  std::filesystem::create_directories(options_.state_dir);
  const std::string port_file = options_.state_dir + "/ports";
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {
      KilndBinary(),
      "--listen",
      absl::StrCat("127.0.0.1:", port_),
      "--state-dir",
      options_.state_dir,
      "--port-file",
      port_file,
      "--slots",
      absl::StrCat(options_.slots),
      "--grace-s",
      absl::StrCat(options_.grace_s),
      "--worker-binary",
      WorkerBinary(),
  };
  if (!options_.auth_token_file.empty()) {
    args.push_back("--auth-token-file");
    args.push_back(options_.auth_token_file);
  }
  if (options_.metrics) {
    args.push_back("--metrics-listen");
    args.push_back(metrics_port_ == 0 ? "127.0.0.1:0" : absl::StrCat("127.0.0.1:", metrics_port_));
  }
  if (!options_.tls_cert.empty()) {
    args.insert(args.end(), {"--tls-cert", options_.tls_cert, "--tls-key", options_.tls_key});
  }
  for (const std::string& f : options_.extra_flags) args.push_back(f);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  if (pid_ < 0) return absl::InternalError("fork failed");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError("kilnd exited at start:\n" + Log());
    }
    const std::string ports = ReadFile(port_file);
    if (!ports.empty()) {
      for (absl::string_view line : absl::StrSplit(ports, '\n', absl::SkipEmpty())) {
        std::pair<std::string, std::string> kv = absl::StrSplit(line, '=');
        if (kv.first == "grpc") port_ = std::stoi(kv.second);
        if (kv.first == "metrics") metrics_port_ = std::stoi(kv.second);
      }
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("kilnd did not start:\n" + Log());
}

void KilndProcess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

void KilndProcess::Freeze() {
  if (pid_ <= 0) return;
  kill(pid_, SIGSTOP);
  const std::string tasks = absl::StrCat("/proc/", pid_, "/task");
  for (bool all_stopped = false; !all_stopped; absl::SleepFor(absl::Milliseconds(1))) {
    all_stopped = true;
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
      const std::string stat = ReadFile(task.path().string() + "/stat");
      const size_t paren = stat.rfind(')');
      if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'T') {
        all_stopped = false;
      }
    }
  }
}

int KilndProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (absl::Now() > deadline) return -1;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return -1;
}

std::unique_ptr<client::KilnClient> KilndProcess::Client(const std::string& token) const {
  client::ClientOptions options;
  options.server = address();
  options.token = token;
  options.tls_ca = options_.tls_cert;
  return *client::KilnClient::Connect(options);
}

std::unique_ptr<v1::ClusterService::Stub> KilndProcess::ClusterStub() const {
  return v1::ClusterService::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

namespace {

// Live (non-zombie) processes whose process group is `pgid`.
bool GroupHasLiveMember(pid_t pgid) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return false;
  bool found = false;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(paren + 2));
    std::string state, ppid, group;
    fields >> state >> ppid >> group;
    if (state != "Z" && group == absl::StrCat(pgid)) {
      found = true;
      break;
    }
  }
  closedir(proc);
  return found;
}

}  // namespace

bool ProcessOrGroupAlive(pid_t pid) { return pid > 0 && GroupHasLiveMember(pid); }

bool WaitAllGone(const std::vector<pid_t>& pids, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    bool any = false;
    for (pid_t p : pids) any = any || ProcessOrGroupAlive(p);
    if (!any) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

pid_t StartCli(const std::vector<std::string>& args, const std::string& dir) {
  const std::string out_path = dir + "/kiln.out", err_path = dir + "/kiln.err";
  std::vector<std::string> argv = {CliBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (freopen(out_path.c_str(), "w", stdout) == nullptr) _exit(126);
    if (freopen(err_path.c_str(), "w", stderr) == nullptr) _exit(126);
    unsetenv("KILN_SERVER");
    unsetenv("KILN_TOKEN");
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  return pid;
}

CliRun FinishCli(pid_t pid, const std::string& dir) {
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(dir + "/kiln.out"),
          ReadFile(dir + "/kiln.err")};
}

CliRun RunCli(const std::vector<std::string>& args, const std::string& dir) {
  return FinishCli(StartCli(args, dir), dir);
}

}  // namespace kiln::testing
