// Integration-test harness: runs a real kilnd binary as a child process on an OS-chosen port
// (--listen 127.0.0.1:0, read back from --port-file) with the real kiln-worker, restarts it on the
// same port and state dir, kills it; builds specs of real training jobs; runs the kiln CLI; and
// offers clients, job inspection and waiting helpers.
#pragma once

#include <signal.h>
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
std::string WorkerBinary();  // kiln-worker as shipped: the real trainer
std::string DataBinary();    // kiln-data
std::string CliBinary();     // kiln
std::string TrainBinary();   // kiln-train (tests that list //worker:kiln-train in their data)

struct KilndOptions {
  std::string state_dir;
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
  // SIGSTOP, then waits until every thread of kilnd has stopped (kill only queues the signal: a
  // thread on another core may still answer a call for a moment). Thaw sends SIGCONT.
  void Freeze();
  void Thaw() { Signal(SIGCONT); }
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

// --- Specs of real training jobs (kiln-worker runs engine/train; nothing is scripted) ---
//
// Note [Real jobs in tests]
// Every fault is produced by real training and real process events, not by test labels:
//  - MlpJob: a small MLP on the trainer's synthetic task (no data files), a few ms per step here;
//    with `workers` > 1 it is data parallel (parallel.dp = workers) over Gloo, rendezvousing
//    through kilnd's key-value store. Long runs are many steps, not slow steps.
//  - GptJob: a small GPT-2 on a byte-level token file (PrepareTokens), ~15 ms per step per rank
//    at dp 2 on an idle 2-core machine, with sharded (ZeRO) checkpoints.
//  - LongStepJob: an MLP whose single optimizer step accumulates gradients over hundreds of
//    micro-batches, several seconds per step. The trainer honours a stop request only between
//    steps, so a worker asked to stop cannot do so within a grace of a second or two: this is
//    "a worker that ignores the stop" for cancel, drain and coordinator loss, and it makes kilnd
//    (or the worker's own coordinator-loss deadline) end the process by force.
//  - BadInputJob: a GPT-2 whose vocabulary (64) is smaller than the bytes in its token file; the
//    trainer refuses the data and the worker exits 2 (bad input).
// Crashes are signals (SIGKILL, SIGSEGV) sent to a worker; hangs are SIGSTOP.
std::string MlpJob(int steps, int workers = 1, const std::string& extra_yaml = "");
std::string GptJob(const std::string& train_bin, int steps, int workers, int zero_stage,
                   const std::string& extra_yaml = "");
std::string LongStepJob(int workers = 1, const std::string& extra_yaml = "");
std::string BadInputJob(const std::string& train_bin);
// Writes generated English-like text into `dir` and turns it into dir/tokens/{train,val}.bin with
// `kiln-data prepare --tokenizer byte`; returns the path of train.bin.
absl::StatusOr<std::string> PrepareTokens(const std::string& dir);

absl::StatusOr<v1::Job> Submit(client::KilnClient* client, const std::string& yaml,
                               const std::string& submission_id = "");

// Polls GetJob (with events) until `done(job)` or the timeout; returns the last job seen.
absl::StatusOr<v1::Job> WaitFor(client::KilnClient* client, const std::string& job_id,
                                const std::function<bool(const v1::Job&)>& done,
                                absl::Duration timeout);
absl::StatusOr<v1::Job> WaitForState(client::KilnClient* client, const std::string& job_id,
                                     v1::JobState state, absl::Duration timeout);
// Until the job is SUCCEEDED, FAILED or CANCELLED.
absl::StatusOr<v1::Job> WaitForEnd(client::KilnClient* client, const std::string& job_id,
                                   absl::Duration timeout);
// Until every rank has reported a heartbeat in the phase "train" (the trainer is in its step loop).
absl::StatusOr<v1::Job> WaitForTraining(client::KilnClient* client, const std::string& job_id,
                                        absl::Duration timeout);

// --- Inspecting a job ---
std::vector<pid_t> Pids(const v1::Job& job);
const v1::JobEvent* FindEvent(const v1::Job& job, const std::string& text);
bool HasEvent(const v1::Job& job, const std::string& text);
absl::Time EventTime(const v1::JobEvent& event);
// The number after `prefix` in `text` ("... from checkpoint step 200" -> 200), or -1.
int64_t NumberAfter(const std::string& text, const std::string& prefix);
// Every rank's log, merged, as StreamLogs returns it.
std::string Logs(client::KilnClient* client, const std::string& job_id);
// Every metric point of the job, all attempts.
std::vector<v1::MetricPoint> AllMetrics(client::KilnClient* client, const std::string& job_id);

// --- Processes ---
// Whether a process (or any member of its process group) still runs; zombies count as gone.
bool ProcessOrGroupAlive(pid_t pid);
// Waits until none of `pids` (nor their groups) is alive.
bool WaitAllGone(const std::vector<pid_t>& pids, absl::Duration timeout);

// --- The kiln CLI, as users run it (KILN_SERVER and KILN_TOKEN unset) ---
struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};
// Starts `kiln args...` with output to dir/kiln.{out,err}; FinishCli waits for it.
pid_t StartCli(const std::vector<std::string>& args, const std::string& dir);
CliRun FinishCli(pid_t pid, const std::string& dir);
CliRun RunCli(const std::vector<std::string>& args, const std::string& dir);

std::string ReadFile(const std::string& path);
// The per-job token kilnd handed a worker, read back from the worker's initial environment (the
// worker unsets it, but /proc/<pid>/environ keeps the original block). Test-only spying.
std::string WorkerToken(pid_t pid);
std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text);
bool Contains(const std::string& haystack, const std::string& needle);

}  // namespace kiln::testing
