// kiln-worker: one rank of a kilnd job. Registers with its per-job token, receives its assignment
// (rank, world size, spec, attempt, resume checkpoint), heartbeats on a background thread, runs the
// engine's trainer with an observer that reports to kilnd, and exits 0 on success, 2 on bad input,
// 1 otherwise. Started by kilnd's launcher; see Note [Worker process lifetime] in
// scheduler/launcher.h and Note [Coordinator loss] in worker/reporter.h.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/core/parallel.h"
#include "engine/train/trainer.h"
#include "worker/coordinator_link.h"
#include "worker/kv_client.h"
#include "worker/kv_store.h"
#include "worker/reporter.h"
#include "worker/reporting_observer.h"
#include "worker/stop_agreement.h"

namespace kiln::worker {
namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitFailure = 1;

void Say(const std::string& line) { std::fprintf(stderr, "kiln-worker: %s\n", line.c_str()); }

void OnStopSignal(int) { g_stop_signal.store(true); }
void OnParentDeath(int) { g_parent_died.store(true); }

struct Flags {
  LinkOptions link;
  double grace_s = 30;
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (i + 1 >= argc) return absl::InvalidArgumentError(name + " needs a value");
    const std::string value = argv[++i];
    int n = 0;
    if (name == "--server") {
      f.link.server = value;
    } else if (name == "--job") {
      f.link.worker.set_job_id(value);
    } else if (name == "--rank" && absl::SimpleAtoi(value, &n) && n >= 0) {
      f.link.worker.set_rank(n);
    } else if (name == "--attempt" && absl::SimpleAtoi(value, &n) && n >= 1) {
      f.link.worker.set_attempt(n);
    } else if (name == "--grace-s" && absl::SimpleAtod(value, &f.grace_s) && f.grace_s > 0) {
    } else if (name == "--tls-ca") {
      f.link.tls_ca = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("bad flag ", name, " ", value));
    }
  }
  const char* token = std::getenv("KILN_WORKER_TOKEN");
  if (token == nullptr || *token == '\0') {
    return absl::InvalidArgumentError(
        "KILN_WORKER_TOKEN is not set (kiln-worker is started by kilnd)");
  }
  f.link.token = token;
  unsetenv("KILN_WORKER_TOKEN");  // the trainer and anything it starts need not see it
  if (f.link.server.empty() || f.link.worker.job_id().empty() || f.link.worker.attempt() < 1) {
    return absl::InvalidArgumentError("--server, --job, --rank and --attempt are required");
  }
  return f;
}

// Every rank publishes its host and waits for all the others before training: the gang starts
// together or not at all, and a rank that never arrives turns into a hang the coordinator sees.
absl::Status Rendezvous(KvClient* kv, const v1::Assignment& a, const Reporter& reporter) {
  if (absl::Status s = kv->Set(absl::StrCat("rank/", a.rank(), "/host"), a.peers(a.rank()));
      !s.ok()) {
    return s;
  }
  std::vector<std::string> keys;
  for (int r = 0; r < a.world_size(); ++r) keys.push_back(absl::StrCat("rank/", r, "/host"));
  const absl::Duration timeout = absl::Seconds(a.spec().fault().hang_timeout_s());
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    // Short waits, so that a stop request (cancel, coordinator loss) is noticed.
    absl::Status s = kv->Wait(keys, std::min(absl::Seconds(5), timeout));
    if (s.ok() || !absl::IsDeadlineExceeded(s) || absl::Now() > deadline) return s;
    if (reporter.ShouldStop()) return absl::CancelledError("stopped during rendezvous");
  }
}

// Registers, retrying while kilnd is unreachable for up to the grace period.
absl::StatusOr<v1::Assignment> RegisterWithRetry(CoordinatorLink* link, absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    absl::StatusOr<v1::Assignment> a = link->Register(/*reconnect=*/false);
    if (a.ok() || !IsTransient(a.status()) || absl::Now() + backoff > deadline) return a;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

int Run(int argc, char** argv) {
  signal(SIGTERM, OnStopSignal);
  signal(SIGINT, OnStopSignal);
  signal(SIGUSR1, OnParentDeath);  // PR_SET_PDEATHSIG, set by kilnd's launcher
  signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    Say(std::string(flags.status().message()));
    return kExitBadInput;
  }
  const absl::Duration grace = absl::Seconds(flags->grace_s);
  absl::StatusOr<std::unique_ptr<CoordinatorLink>> link = CoordinatorLink::Create(flags->link);
  if (!link.ok()) {
    Say(link.status().ToString());
    return kExitFailure;
  }
  absl::StatusOr<v1::Assignment> assignment = RegisterWithRetry(link->get(), grace);
  if (!assignment.ok()) {
    Say("cannot register with kilnd at " + flags->link.server + ": " +
        assignment.status().ToString());
    return kExitFailure;
  }
  const v1::Assignment& a = *assignment;
  Say(absl::StrCat("registered: ", a.job_id(), " rank ", a.rank(), "/", a.world_size(), " attempt ",
                   a.attempt(), ", ", a.threads(), " threads, resume from ",
                   a.resume_checkpoint().empty() ? "scratch" : a.resume_checkpoint()));

  // Past the grace without a coordinator the worker ends at once, whatever the trainer is doing:
  // no worker outlives a dead kilnd by more than the grace (Note [Coordinator loss]).
  Reporter reporter(link->get(), absl::Milliseconds(a.heartbeat_interval_ms()), grace,
                    a.rank() == 0, [] {
                      std::fflush(stderr);
                      _exit(kExitFailure);
                    });
  reporter.Start();
  if (a.world_size() > 1) {
    reporter.SetPhase("rendezvous");
    KvClient kv(link->get());
    if (absl::Status s = Rendezvous(&kv, a, reporter); !s.ok()) {
      Say("rendezvous failed: " + s.ToString());
      reporter.Finish(kExitFailure, "rendezvous failed: " + s.ToString());
      return kExitFailure;
    }
    Say(absl::StrCat("rendezvous: all ", a.world_size(), " ranks present"));
    reporter.SetPhase("init");
  }
  train::TrainOptions options;
  options.rank = a.rank();
  options.world_size = a.world_size();
  options.resume_dir = a.resume_checkpoint();
  options.threads = a.threads();
  // Ranks meet through kilnd's key-value store (scoped to this job and attempt), and agree there
  // on when to stop (Note [Agreeing on a stop]).
  KvClient kv(link->get());
  KvStore store(&kv);
  if (a.world_size() > 1) options.store = &store;
  StopAgreement agreement(&kv, a.rank(), a.world_size());
  ReportingObserver observer(&reporter, a.world_size() > 1 ? &agreement : nullptr);
  const absl::Status status = train::RunTraining(a.spec(), options, &observer);
  const int code = train::ExitCodeFor(status);
  Say(status.ok()
          ? "training finished"
          : absl::StrCat("training ended: ", status.ToString(),
                         reporter.ShouldStop() ? " (stop: " + reporter.stop_reason() + ")" : ""));
  reporter.Finish(code, status.ok() ? "" : status.ToString());
  return code;
}

}  // namespace
}  // namespace kiln::worker

int main(int argc, char** argv) {
  kiln::EnsurePassiveOpenMpWait(argv);
  return kiln::worker::Run(argc, argv);
}
