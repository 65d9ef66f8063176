// GPU discovery without linking CUDA (device files and CUDA_VISIBLE_DEVICES), and slot bookkeeping.
#include "scheduler/slots.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace kiln::scheduler {
namespace {

std::vector<int> DetectGpus() {
  std::vector<int> ids;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    for (absl::string_view part : absl::StrSplit(visible, ',', absl::SkipEmpty())) {
      int id = 0;
      if (absl::SimpleAtoi(part, &id) && id >= 0) ids.push_back(id);
    }
    return ids;
  }
  std::error_code ec;
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)entry;
    ++count;
  }
  for (int i = 0; i < count; ++i) ids.push_back(i);
  return ids;
}

}  // namespace

NodeResources DetectResources(int slots_flag, bool slots_flag_given) {
  NodeResources r;
  r.cpu_cores = std::max(1u, std::thread::hardware_concurrency());
  r.gpu_ids = DetectGpus();
  if (!r.gpu_ids.empty()) {
    r.device = "cuda";
    r.slots = static_cast<int>(r.gpu_ids.size());
  } else {
    r.device = "cpu";
    r.slots = r.cpu_cores;
  }
  if (slots_flag_given) {
    r.slots = slots_flag;
    if (r.device == "cuda" && r.slots > static_cast<int>(r.gpu_ids.size())) {
      // More slots than GPUs: ranks share GPUs round-robin.
      const std::vector<int> gpus = r.gpu_ids;
      r.gpu_ids.clear();
      for (int i = 0; i < r.slots; ++i) r.gpu_ids.push_back(gpus[i % gpus.size()]);
    }
  }
  return r;
}

int SlotPool::free() const {
  return static_cast<int>(std::count(owner_.begin(), owner_.end(), std::string()));
}

std::vector<int> SlotPool::Allocate(const std::string& job_id, int n) {
  std::vector<int> out;
  if (n > free()) return out;
  for (int i = 0; i < total() && static_cast<int>(out.size()) < n; ++i) {
    if (owner_[i].empty()) {
      owner_[i] = job_id;
      out.push_back(i);
    }
  }
  return out;
}

void SlotPool::Claim(const std::string& job_id, const std::vector<int>& slots) {
  for (int s : slots) {
    if (s >= 0 && s < total() && owner_[s].empty()) owner_[s] = job_id;
  }
}

void SlotPool::Release(const std::string& job_id) {
  for (std::string& o : owner_) {
    if (o == job_id) o.clear();
  }
}

std::vector<std::string> SlotPool::Holders() const {
  std::set<std::string> ids(owner_.begin(), owner_.end());
  ids.erase("");
  return {ids.begin(), ids.end()};
}

}  // namespace kiln::scheduler
