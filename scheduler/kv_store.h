// The rendezvous key-value store ranks meet through (Gloo addresses, NCCL unique ids), scoped per
// job and attempt so a restarted gang never reads its predecessor's keys. Writes go through to the
// JobStore, so a kilnd restart in the middle of a rendezvous loses no key.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/job_store.h"

namespace kiln::scheduler {

inline constexpr size_t kMaxKvKeyBytes = 256;
inline constexpr size_t kMaxKvValueBytes = 1 << 20;
inline constexpr size_t kMaxKvKeysPerAttempt = 10000;
inline constexpr int kMaxKvWaitKeys = 1024;

class KvStore {
 public:
  explicit KvStore(JobStore* store) : store_(store) {}

  absl::Status Set(const std::string& job_id, int attempt, const std::string& key,
                   const std::string& value);
  // NOT_FOUND when the key is absent.
  absl::StatusOr<std::string> Get(const std::string& job_id, int attempt, const std::string& key);
  // Adds `delta` to the integer stored at `key` (absent = 0); returns the new value.
  absl::StatusOr<int64_t> Add(const std::string& job_id, int attempt, const std::string& key,
                              int64_t delta);
  // Blocks until every key exists (OK), the timeout passes (DEADLINE_EXCEEDED) or `cancelled`
  // returns true (CANCELLED; polled every 100 ms).
  absl::Status Wait(const std::string& job_id, int attempt, const std::vector<std::string>& keys,
                    absl::Duration timeout, const std::function<bool()>& cancelled);

  // Loads an attempt's keys from the JobStore (recovery).
  absl::Status Load(const std::string& job_id, int attempt);
  // Forgets every attempt of the job below `below_attempt` (INT32_MAX: all).
  void Drop(const std::string& job_id, int below_attempt);

 private:
  using Scope = std::pair<std::string, int>;
  absl::Status CheckKey(const std::string& key) const;
  absl::Status Put(const Scope& scope, const std::string& key, const std::string& value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobStore* store_;
  absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<Scope, std::map<std::string, std::string>> data_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::scheduler
