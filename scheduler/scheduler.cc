// PlanSchedule: priority-then-FIFO order, whole gangs only, no backfill, and the waiting reasons.
#include "scheduler/scheduler.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln::scheduler {
namespace {

std::string Plural(int n, const char* one, const char* many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

// "1 job ahead at priority 10", "3 jobs ahead (2 at priority 10, 1 at priority 0)".
std::string Ahead(const std::map<int, int, std::greater<int>>& ahead_by_priority) {
  int total = 0;
  for (const auto& [priority, count] : ahead_by_priority) total += count;
  if (total == 0) return "";
  if (ahead_by_priority.size() == 1) {
    return absl::StrCat("; ", Plural(total, "job", "jobs"), " ahead at priority ",
                        ahead_by_priority.begin()->first);
  }
  std::vector<std::string> parts;
  for (const auto& [priority, count] : ahead_by_priority) {
    parts.push_back(absl::StrCat(count, " at priority ", priority));
  }
  return absl::StrCat("; ", Plural(total, "job", "jobs"), " ahead (", absl::StrJoin(parts, ", "),
                      ")");
}

}  // namespace

SchedulePlan PlanSchedule(std::vector<QueuedJob> queue, int free_slots, int total_slots,
                          bool draining) {
  std::stable_sort(queue.begin(), queue.end(), [](const QueuedJob& a, const QueuedJob& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.seq < b.seq;
  });
  SchedulePlan plan;
  std::map<int, int, std::greater<int>> ahead;  // priority -> waiting jobs ahead
  bool blocked = draining;
  int position = 0;
  for (const QueuedJob& job : queue) {
    if (!blocked && job.workers <= free_slots) {
      plan.start.push_back(job.id);
      free_slots -= job.workers;
      continue;
    }
    blocked = true;
    Waiting w;
    w.id = job.id;
    w.position = ++position;
    if (draining) {
      w.reason = "kilnd is draining: no new jobs start until it restarts";
    } else {
      w.reason = absl::StrCat("waiting for ", Plural(job.workers, "slot", "slots"), ", ",
                              free_slots, " free");
      if (total_slots == 0) absl::StrAppend(&w.reason, " (kilnd has no slots)");
      absl::StrAppend(&w.reason, Ahead(ahead));
    }
    ++ahead[job.priority];
    plan.waiting.push_back(std::move(w));
  }
  return plan;
}

}  // namespace kiln::scheduler
