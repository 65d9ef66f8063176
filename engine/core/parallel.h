// The process's CPU threading policy. Kiln's CPU kernels and oneDNN share one OpenMP thread team;
// SetNumThreads fixes its size for the process (kiln-train --threads, one worker per CPU slot).
#pragma once

#include <cstdint>
#include <functional>

namespace kiln {

// Note [OpenMP wait policy]
// libgomp's default lets idle team threads spin for a long while at every barrier. On a machine
// that is also running anything else (other workers, builds) a spinning thread steals the core its
// team-mate needs, and a kernel that takes 2 ms alone takes 30: measured here with two threads on
// two busy cores. Passive waiting costs a few microseconds per parallel region on an idle machine
// (a training step has a few hundred) and removes that cliff, so Kiln's mains make it the default.
// libgomp reads the policy once, when it is loaded, so a main that finds it unset sets it and
// re-executes itself. OMP_WAIT_POLICY=active (set by the user) is left alone.
void EnsurePassiveOpenMpWait(char** argv);

// Sets the thread count for Kiln kernels and oneDNN (<= 0 means: all hardware threads).
void SetNumThreads(int n);
int NumThreads();
int HardwareThreads();

// Runs fn(begin, end) over [0, n) split into contiguous chunks of at least `grain` items, on the
// OpenMP team. Runs inline when the work is small or already inside a parallel region.
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Like ParallelFor but a template, so the loop body inlines (use in kernels).
template <typename Fn>
void ParallelForInline(int64_t n, int64_t grain, Fn&& fn);

}  // namespace kiln

#include <omp.h>

namespace kiln {

template <typename Fn>
void ParallelForInline(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int threads = NumThreads();
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int team = static_cast<int>(max_chunks < threads ? max_chunks : threads);
  if (team <= 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num();
    const int64_t chunk = (n + team - 1) / team;
    const int64_t begin = t * chunk;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace kiln
