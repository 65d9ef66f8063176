// The gang scheduler: priority then FIFO, whole gangs only, no backfill past a blocked job, and the
// waiting reasons users read. Plus the slot pool underneath.
#include "scheduler/scheduler.h"

#include "scheduler/slots.h"
#include "tests/testing.h"

namespace kiln::scheduler {
namespace {

QueuedJob Q(const std::string& id, int64_t seq, int priority, int workers) {
  return {id, seq, priority, workers};
}

TEST_CASE("higher priority first, FIFO within a priority", "[scheduler]") {
  const SchedulePlan plan = PlanSchedule(
      {Q("a", 1, 0, 1), Q("b", 2, 5, 1), Q("c", 3, 0, 1), Q("d", 4, 5, 1)}, 4, 4, false);
  REQUIRE(plan.start == std::vector<std::string>{"b", "d", "a", "c"});
  CHECK(plan.waiting.empty());
}

TEST_CASE("a gang starts whole or not at all", "[scheduler]") {
  const SchedulePlan plan = PlanSchedule({Q("big", 1, 0, 3)}, 2, 4, false);
  CHECK(plan.start.empty());
  REQUIRE(plan.waiting.size() == 1);
  CHECK(plan.waiting[0].reason == "waiting for 3 slots, 2 free");
  CHECK(plan.waiting[0].position == 1);
}

TEST_CASE("nothing slips past a blocked job, and the reason says why", "[scheduler]") {
  const SchedulePlan plan =
      PlanSchedule({Q("big", 1, 10, 4), Q("small", 2, 0, 1), Q("tiny", 3, 0, 4)}, 2, 8, false);
  CHECK(plan.start.empty());
  REQUIRE(plan.waiting.size() == 3);
  CHECK(plan.waiting[0].reason == "waiting for 4 slots, 2 free");
  CHECK(plan.waiting[1].reason == "waiting for 1 slot, 2 free; 1 job ahead at priority 10");
  CHECK(plan.waiting[2].reason ==
        "waiting for 4 slots, 2 free; 2 jobs ahead (1 at priority 10, 1 at priority 0)");
  CHECK(plan.waiting[2].position == 3);
}

TEST_CASE("jobs that fit start before the first one that does not", "[scheduler]") {
  const SchedulePlan plan =
      PlanSchedule({Q("a", 1, 0, 2), Q("b", 2, 0, 2), Q("c", 3, 0, 1)}, 3, 4, false);
  REQUIRE(plan.start == std::vector<std::string>{"a"});
  REQUIRE(plan.waiting.size() == 2);
  CHECK(plan.waiting[0].reason == "waiting for 2 slots, 1 free");
  CHECK(plan.waiting[1].reason == "waiting for 1 slot, 1 free; 1 job ahead at priority 0");
}

TEST_CASE("draining and slot-less nodes say so", "[scheduler]") {
  SchedulePlan plan = PlanSchedule({Q("a", 1, 0, 1)}, 4, 4, true);
  CHECK(plan.start.empty());
  REQUIRE(plan.waiting.size() == 1);
  CHECK(plan.waiting[0].reason.find("draining") != std::string::npos);
  plan = PlanSchedule({Q("a", 1, 0, 1)}, 0, 0, false);
  REQUIRE(plan.waiting.size() == 1);
  CHECK(plan.waiting[0].reason == "waiting for 1 slot, 0 free (kilnd has no slots)");
}

TEST_CASE("the slot pool hands out and takes back whole gangs", "[scheduler]") {
  SlotPool pool(4);
  CHECK(pool.Allocate("a", 3) == std::vector<int>{0, 1, 2});
  CHECK(pool.Allocate("b", 2).empty());
  CHECK(pool.free() == 1);
  CHECK(pool.Allocate("b", 1) == std::vector<int>{3});
  pool.Release("a");
  CHECK(pool.free() == 3);
  pool.Claim("c", {0, 3});  // 3 is taken by b: skipped
  CHECK(pool.free() == 2);
  CHECK(pool.Holders() == std::vector<std::string>{"b", "c"});
}

TEST_CASE("resources: --slots overrides detection", "[scheduler]") {
  const NodeResources r = DetectResources(3, true);
  CHECK(r.slots == 3);
  CHECK(r.cpu_cores >= 1);
  const NodeResources zero = DetectResources(0, true);
  CHECK(zero.slots == 0);
}

TEST_CASE("resources: GPUs from CUDA_VISIBLE_DEVICES become slots", "[scheduler]") {
  setenv("CUDA_VISIBLE_DEVICES", "2,3", 1);
  NodeResources r = DetectResources(0, false);
  CHECK(r.device == "cuda");
  CHECK(r.slots == 2);
  CHECK(r.gpu_ids == std::vector<int>{2, 3});
  // More slots than GPUs: ranks share GPUs round-robin.
  r = DetectResources(4, true);
  CHECK(r.slots == 4);
  CHECK(r.gpu_ids == std::vector<int>{2, 3, 2, 3});
  // An empty list hides every GPU: CPU slots.
  setenv("CUDA_VISIBLE_DEVICES", "", 1);
  r = DetectResources(0, false);
  CHECK(r.device == "cpu");
  CHECK(r.slots == r.cpu_cores);
  unsetenv("CUDA_VISIBLE_DEVICES");
}

}  // namespace
}  // namespace kiln::scheduler
