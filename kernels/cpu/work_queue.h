// Dynamic hand-out of independent work items to the OpenMP team: items go out one at a time in
// increasing order from an atomic counter, so a thread that is descheduled, or has drawn heavier
// items (causal attention's later query blocks), does not hold the rest of the team up at the
// closing barrier.
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>

#include "engine/core/parallel.h"

namespace kiln::kernels::cpu {

// Items [0, n), taken in increasing order by any thread.
class WorkQueue {
 public:
  explicit WorkQueue(int64_t n) : n_(n) {}
  // The next item, or false when none is left.
  bool Next(int64_t* item) {
    *item = next_.fetch_add(1, std::memory_order_relaxed);
    return *item < n_;
  }

 private:
  const int64_t n_;
  std::atomic<int64_t> next_{0};
};

// Calls worker(thread, queue) once on each thread of a team of up to NumThreads() (thread = the
// OpenMP thread number, for per-thread scratch); workers pull items until the queue is empty.
// Only for items whose results do not depend on the thread that runs them, so the output is the
// same for any schedule.
template <typename Worker>
void RunWorkers(int64_t items, Worker&& worker) {
  WorkQueue queue(items);
  const int64_t workers = items < NumThreads() ? items : NumThreads();
  ParallelForInline(workers, 1, [&](int64_t, int64_t) { worker(omp_get_thread_num(), queue); });
}

}  // namespace kiln::kernels::cpu
