// kilnd: the Kiln coordinator daemon. Parses flags, starts serving, and turns signals into the
// shutdown sequence: the first SIGTERM/SIGINT drains (no new jobs; running gangs checkpoint, stop
// and are requeued; exit once no worker is left or after the grace), a second one kills at once.
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "scheduler/config.h"
#include "scheduler/log.h"
#include "scheduler/server.h"

int main(int argc, char** argv) {
  // Shutdown signals are taken synchronously by this thread; every other thread (gRPC's included,
  // created later) inherits the blocked mask. Workers get a clean mask at exec (launcher.cc).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // absl::Mutex's deadlock detection builds a lock graph on every acquisition: costly on the
  // heartbeat path, and lock order is fixed by design (Coordinator before JobStore).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  absl::StatusOr<kiln::scheduler::KilndConfig> config =
      kiln::scheduler::ParseKilndFlags(argc, argv);
  if (!config.ok()) {
    if (absl::IsNotFound(config.status())) {
      std::fputs(std::string(config.status().message()).c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "kilnd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  kiln::scheduler::Kilnd kilnd(*config);
  if (absl::Status s = kilnd.Start(); !s.ok()) {
    std::fprintf(stderr, "kilnd: %s\n", std::string(s.message()).c_str());
    return 1;
  }

  bool draining = false;
  absl::Time deadline = absl::InfiniteFuture();
  int exit_code = 0;
  while (true) {
    const timespec tick = {0, 100 * 1000 * 1000};
    siginfo_t info;
    const int sig = sigtimedwait(&signals, &info, &tick);
    if (sig == SIGHUP) {
      kiln::scheduler::LogInfo("SIGHUP ignored (send SIGTERM to drain)");
    } else if (sig == SIGTERM || sig == SIGINT) {
      if (draining) {
        kiln::scheduler::LogWarn("second signal: killing workers and exiting now");
        kilnd.KillWorkers();
        exit_code = 1;
        break;
      }
      draining = true;
      deadline = absl::Now() + absl::Seconds(kilnd.grace_s() + 5);
      kiln::scheduler::LogInfo("signal received: draining", {{"signal", sig}});
      kilnd.BeginDrain();
    }
    if (draining && kilnd.Idle()) break;
    if (draining && absl::Now() > deadline) {
      kiln::scheduler::LogWarn("drain deadline passed: killing the remaining workers");
      kilnd.KillWorkers();
      break;
    }
  }
  kilnd.Shutdown();
  kiln::scheduler::LogInfo("kilnd stopped");
  return exit_code;
}
