// The node's worker slots: one per GPU when kilnd finds GPUs, else one per CPU core (or --slots).
// A SlotPool hands out whole gangs of slot indices and remembers which job holds which.
#pragma once

#include <string>
#include <vector>

namespace kiln::scheduler {

struct NodeResources {
  std::string device;  // "cuda" or "cpu"
  int slots = 0;
  std::vector<int> gpu_ids;  // slot i -> GPU gpu_ids[i] when device == "cuda"
  int cpu_cores = 1;
};

// GPUs from CUDA_VISIBLE_DEVICES if set, else /proc/driver/nvidia/gpus; CPU cores otherwise.
// `slots_flag` > 0 overrides the count; 0 means "detect"; -1 is not allowed.
NodeResources DetectResources(int slots_flag, bool slots_flag_given);

class SlotPool {
 public:
  explicit SlotPool(int total) : owner_(total) {}

  int total() const { return static_cast<int>(owner_.size()); }
  int free() const;
  // The lowest `n` free slots for `job_id`; empty when they do not fit.
  std::vector<int> Allocate(const std::string& job_id, int n);
  // Marks specific slots as held (recovery). Slots out of range or taken are skipped.
  void Claim(const std::string& job_id, const std::vector<int>& slots);
  void Release(const std::string& job_id);
  std::vector<std::string> Holders() const;

 private:
  std::vector<std::string> owner_;  // "" = free
};

}  // namespace kiln::scheduler
