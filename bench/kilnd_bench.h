// Shared by the control-plane benchmarks: a kilnd child process on an OS-chosen port, and small
// measurement helpers (process CPU and RSS, percentiles, the machine and its load).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace kiln::bench {

struct Kilnd {
  pid_t pid = -1;
  std::string address;
};

// Starts `binary` (kilnd) with its state under dir/state, its log in dir/kilnd.log, and
// KILN_BENCH_DIR=dir in its environment (its workers inherit it); waits until it serves.
Kilnd StartKilnd(const std::string& binary, const std::string& dir, int slots,
                 const std::string& worker, const std::string& sync = "full");
// SIGTERM, then waits for it.
void StopKilnd(Kilnd& k);

std::string ReadFile(const std::string& path);
// utime + stime of a process, in seconds.
double CpuSeconds(pid_t pid);
double RssMiB(pid_t pid);
// The 1-minute load average: this machine is shared, so every figure carries it.
std::string LoadAverage();
double Percentile(std::vector<double> v, double p);
// "<CPU model>, N cores visible, YYYY-MM-DD".
std::string Machine();

}  // namespace kiln::bench
