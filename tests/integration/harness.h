// Integration-test harness: runs a real kilnd binary as a child process on an OS-chosen port
// (--listen 127.0.0.1:0, read back from --port-file), restarts it on the same port and state dir,
// kills it, and offers clients, job-spec builders and waiting helpers.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "kiln/v1/cluster_service.grpc.pb.h"

namespace kiln::testing {

std::string KilndBinary();
std::string WorkerBinary();          // kiln-worker as shipped (real trainer, or the pending stub)
std::string ScriptedWorkerBinary();  // kiln-worker linked with the scripted test trainer

struct KilndOptions {
  std::string state_dir;
  std::string worker_binary;
  int slots = 2;
  double grace_s = 3;
  std::string auth_token_file;
  bool metrics = false;
  std::string tls_cert, tls_key;  // serve TLS; clients trust tls_cert
  std::vector<std::string> extra_flags;
};

class KilndProcess {
 public:
  explicit KilndProcess(KilndOptions options) : options_(std::move(options)) {}
  ~KilndProcess();

  // Starts kilnd (on the previous port after the first start) and waits until it serves.
  absl::Status Start();
  void Signal(int sig);
  // Waits for kilnd to exit; returns its exit code (128 + signal when killed).
  int Wait(absl::Duration timeout = absl::Seconds(30));
  bool running() const { return pid_ > 0; }

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const;
  std::string log_path() const { return options_.state_dir + "/kilnd.log"; }
  std::string Log() const;
  std::unique_ptr<client::KilnClient> Client(const std::string& token = "") const;
  std::unique_ptr<v1::ClusterService::Stub> ClusterStub() const;

 private:
  KilndOptions options_;
  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
};

// YAML for a job of the scripted trainer: family mlp, `steps` steps, `workers` ranks, test labels.
std::string ScriptedSpec(int steps, int workers, const std::map<std::string, std::string>& labels,
                         const std::string& extra_yaml = "");

absl::StatusOr<v1::Job> Submit(client::KilnClient* client, const std::string& yaml,
                               const std::string& submission_id = "");

// Polls GetJob until `done(job)` or the timeout; returns the last job seen.
absl::StatusOr<v1::Job> WaitFor(client::KilnClient* client, const std::string& job_id,
                                const std::function<bool(const v1::Job&)>& done,
                                absl::Duration timeout);
absl::StatusOr<v1::Job> WaitForState(client::KilnClient* client, const std::string& job_id,
                                     v1::JobState state, absl::Duration timeout);

// Whether a process (or any member of its process group) still runs; zombies count as gone.
bool ProcessOrGroupAlive(pid_t pid);
// Waits until none of `pids` (nor their groups) is alive.
bool WaitAllGone(const std::vector<pid_t>& pids, absl::Duration timeout);

std::string ReadFile(const std::string& path);
bool Contains(const std::string& haystack, const std::string& needle);

}  // namespace kiln::testing
