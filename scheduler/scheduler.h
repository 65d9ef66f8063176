// The gang scheduler: which queued jobs start now, and why each of the others waits. Pure logic
// over a snapshot (no clocks, no I/O) so its ordering and reasons are unit-tested directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::scheduler {

// Note [Gang scheduling without backfill]
// A job starts only when all of its workers fit at once; it never starts partially. Queued jobs are
// ordered by priority (higher first), then by submission (FIFO). The walk stops admitting at the
// first job that does not fit: nothing behind it may start, even if it would fit, because letting
// small jobs slip past would starve a large job forever. Each waiting job is told exactly that:
// "waiting for 4 slots, 2 free; 1 job ahead at priority 10".

struct QueuedJob {
  std::string id;
  int64_t seq = 0;  // submission order
  int priority = 0;
  int workers = 1;
};

struct Waiting {
  std::string id;
  int position = 0;  // 1-based place in the queue
  std::string reason;
};

struct SchedulePlan {
  std::vector<std::string> start;  // in order
  std::vector<Waiting> waiting;    // in queue order
};

// `draining`: kilnd admits nothing new and says so.
SchedulePlan PlanSchedule(std::vector<QueuedJob> queue, int free_slots, int total_slots,
                          bool draining);

}  // namespace kiln::scheduler
