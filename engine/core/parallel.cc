// Threading policy: one OpenMP team whose size the process sets once.
#include "engine/core/parallel.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

namespace kiln {

namespace {
std::atomic<int> g_threads{0};
}

void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on as we are
}

int HardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void SetNumThreads(int n) {
  if (n <= 0) n = HardwareThreads();
  g_threads.store(n);
  omp_set_num_threads(n);
}

int NumThreads() {
  int n = g_threads.load();
  if (n == 0) {
    n = omp_get_max_threads();
    g_threads.store(n);
  }
  return n;
}

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  ParallelForInline(n, grain, fn);
}

}  // namespace kiln
