// Launcher: starts kiln-worker processes (fork/exec), each in its own process group with stdout and
// stderr appended to its rank's log file, and signals, reaps and probes them. See Note [Worker
// process lifetime].
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::scheduler {

// Note [Worker process lifetime]
// A worker must not outlive its job, nor a dead kilnd by more than the grace period, yet it should
// keep training through a short coordinator outage (kill -9 kilnd and a restart). So:
//  - each worker leads its own process group; stopping it signals the whole group (SIGTERM asks the
//    trainer to checkpoint and stop, SIGKILL follows after the grace);
//  - the worker is started with PR_SET_PDEATHSIG = SIGUSR1: when kilnd dies the worker learns it at
//    once and starts its coordinator-loss clock (it does not die: a restarted kilnd may adopt it);
//  - a worker that cannot reach any coordinator for the grace period stops on its own;
//  - a restarted kilnd adopts the workers recorded in its store, identifying each by pid and
//    /proc start time (so a recycled pid is never mistaken for, or signalled as, a worker).
// Launches happen on the coordinator's long-lived monitor thread: PDEATHSIG fires when the *thread*
// that forked exits, so forking from a short-lived RPC thread would kill-signal workers early.

struct LaunchRequest {
  std::string binary;
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // KEY=VALUE, added to (and overriding) kilnd's environment
  std::string log_path;           // stdout and stderr, appended
  std::string header;             // a line written to the log before the worker starts
  std::string cwd;                // empty = kilnd's
};

struct Launched {
  pid_t pid = 0;
  int64_t start_time = 0;
};

absl::StatusOr<Launched> Launch(const LaunchRequest& request);

// A child of this process that has exited.
struct Exited {
  pid_t pid = 0;
  int exit_code = -1;  // when it exited normally
  int signal = 0;      // when a signal killed it
};

// Reaps every exited child (waitpid(-1, WNOHANG)). kilnd has no children but workers.
std::vector<Exited> ReapExited();

// Whether the process `pid` with /proc start time `start_time` still exists (zombies count as
// gone). start_time 0 skips the identity check.
bool ProcessAlive(pid_t pid, int64_t start_time);

// /proc/<pid>/stat start time (clock ticks since boot), 0 if the process does not exist.
int64_t ProcessStartTime(pid_t pid);

// Signals the process group led by `pid`, but only if `pid` is still the process started at
// `start_time` or the group still has members. SIGTERM/SIGKILL to a stopped group also sends
// SIGCONT so that the signal is acted on.
void SignalGroup(pid_t pid, int64_t start_time, int signal);

}  // namespace kiln::scheduler
