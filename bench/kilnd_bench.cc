// The kilnd child process and measurement helpers of the control-plane benchmarks.
#include "bench/kilnd_bench.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace kiln::bench {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Kilnd StartKilnd(const std::string& binary, const std::string& dir, int slots,
                 const std::string& worker, const std::string& sync) {
  std::filesystem::create_directories(dir);
  const std::string port_file = dir + "/ports";
  Kilnd k;
  k.pid = fork();
  if (k.pid == 0) {
    if (freopen((dir + "/kilnd.log").c_str(), "w", stderr) == nullptr) _exit(126);
    setenv("KILN_BENCH_DIR", dir.c_str(), 1);
    execl(binary.c_str(), binary.c_str(), "--listen", "127.0.0.1:0", "--state-dir",
          (dir + "/state").c_str(), "--port-file", port_file.c_str(), "--slots",
          std::to_string(slots).c_str(), "--worker-binary", worker.c_str(), "--grace-s", "2",
          "--log-level", "warn", "--sync", sync.c_str(), nullptr);
    _exit(127);
  }
  while (ReadFile(port_file).empty()) absl::SleepFor(absl::Milliseconds(20));
  std::fprintf(stderr, "kilnd pid %d (%s)\n", k.pid, dir.c_str());
  const std::string ports = ReadFile(port_file);
  k.address = "127.0.0.1:" + ports.substr(5, ports.find('\n') - 5);
  return k;
}

void StopKilnd(Kilnd& k) {
  kill(k.pid, SIGTERM);
  int status = 0;
  waitpid(k.pid, &status, 0);
}

double CpuSeconds(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  double ticks = 0;
  for (int i = 0; i < 13 && fields >> f; ++i) {
    if (i == 11 || i == 12) ticks += std::stod(f);
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

double RssMiB(pid_t pid) {
  std::istringstream in(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  }
  return 0;
}

std::string LoadAverage() {
  std::istringstream in(ReadFile("/proc/loadavg"));
  std::string one;
  in >> one;
  return one;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

std::string Machine() {
  std::string model = "unknown CPU";
  std::istringstream in(ReadFile("/proc/cpuinfo"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return absl::StrFormat("%s, %d cores visible, %s", model, std::thread::hardware_concurrency(),
                         absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone()));
}

}  // namespace kiln::bench
