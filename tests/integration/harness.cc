// The kilnd child process, spec builders and polling helpers used by the integration tests.
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
std::string ScriptedWorkerBinary() { return Runfile("tests/integration/kiln-worker-scripted"); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
      options_.worker_binary.empty() ? WorkerBinary() : options_.worker_binary,
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

std::string ScriptedSpec(int steps, int workers, const std::map<std::string, std::string>& labels,
                         const std::string& extra_yaml) {
  std::string yaml = absl::StrCat(
      "name: scripted\n"
      "model: {family: mlp, n_layer: 1, d_in: 4, d_ff: 8, vocab_size: 2}\n"
      "train: {steps: ",
      steps,
      ", micro_batch: 1}\n"
      "resources: {workers: ",
      workers, "}\n");
  if (!labels.empty()) {
    yaml += "labels:\n";
    for (const auto& [k, v] : labels) absl::StrAppend(&yaml, "  ", k, ": \"", v, "\"\n");
  }
  return yaml + extra_yaml;
}

absl::StatusOr<v1::Job> Submit(client::KilnClient* client, const std::string& yaml,
                               const std::string& submission_id) {
  v1::SubmitJobRequest request;
  request.set_spec_yaml(yaml);
  request.set_submission_id(submission_id);
  request.set_base_dir("/");
  absl::StatusOr<v1::SubmitJobResponse> r = client->Submit(request);
  if (!r.ok()) return r.status();
  return r->job();
}

absl::StatusOr<v1::Job> WaitFor(client::KilnClient* client, const std::string& job_id,
                                const std::function<bool(const v1::Job&)>& done,
                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<v1::Job> job;
  while (true) {
    job = client->GetJob(job_id, /*include_events=*/true);
    if (job.ok() && done(*job)) return job;
    if (absl::Now() > deadline) {
      if (!job.ok()) return job.status();
      return absl::DeadlineExceededError(
          absl::StrCat("timed out; job is ", v1::JobState_Name(job->state()), ": ", job->reason()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::StatusOr<v1::Job> WaitForState(client::KilnClient* client, const std::string& job_id,
                                     v1::JobState state, absl::Duration timeout) {
  return WaitFor(
      client, job_id, [state](const v1::Job& j) { return j.state() == state; }, timeout);
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

}  // namespace kiln::testing
