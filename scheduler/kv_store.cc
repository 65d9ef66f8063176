// KvStore: a map per (job, attempt) with a condition variable for Wait, written through to SQLite.
#include "scheduler/kv_store.h"

#include <climits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace kiln::scheduler {

absl::Status KvStore::CheckKey(const std::string& key) const {
  if (key.empty() || key.size() > kMaxKvKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("keys are 1 to ", kMaxKvKeyBytes, " bytes, got ", key.size()));
  }
  return absl::OkStatus();
}

absl::Status KvStore::Put(const Scope& scope, const std::string& key, const std::string& value) {
  auto& keys = data_[scope];
  if (keys.size() >= kMaxKvKeysPerAttempt && keys.count(key) == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("an attempt may hold at most ", kMaxKvKeysPerAttempt, " keys"));
  }
  KILN_RETURN_IF_ERROR(store_->KvPut(scope.first, scope.second, key, value));
  keys[key] = value;
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::Status KvStore::Set(const std::string& job_id, int attempt, const std::string& key,
                          const std::string& value) {
  KILN_RETURN_IF_ERROR(CheckKey(key));
  if (value.size() > kMaxKvValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("values are at most ", kMaxKvValueBytes, " bytes, got ", value.size()));
  }
  absl::MutexLock lock(&mu_);
  return Put({job_id, attempt}, key, value);
}

absl::StatusOr<std::string> KvStore::Get(const std::string& job_id, int attempt,
                                         const std::string& key) {
  KILN_RETURN_IF_ERROR(CheckKey(key));
  absl::MutexLock lock(&mu_);
  auto scope = data_.find({job_id, attempt});
  if (scope == data_.end()) return absl::NotFoundError(absl::StrCat("no key ", key));
  auto it = scope->second.find(key);
  if (it == scope->second.end()) return absl::NotFoundError(absl::StrCat("no key ", key));
  return it->second;
}

absl::StatusOr<int64_t> KvStore::Add(const std::string& job_id, int attempt, const std::string& key,
                                     int64_t delta) {
  KILN_RETURN_IF_ERROR(CheckKey(key));
  absl::MutexLock lock(&mu_);
  const Scope scope{job_id, attempt};
  int64_t value = 0;
  auto& keys = data_[scope];
  if (auto it = keys.find(key); it != keys.end() && !absl::SimpleAtoi(it->second, &value)) {
    return absl::FailedPreconditionError(absl::StrCat("key ", key, " does not hold an integer"));
  }
  if ((delta > 0 && value > INT64_MAX - delta) || (delta < 0 && value < INT64_MIN - delta)) {
    return absl::OutOfRangeError(absl::StrCat("key ", key, " would overflow"));
  }
  value += delta;
  KILN_RETURN_IF_ERROR(Put(scope, key, absl::StrCat(value)));
  return value;
}

absl::Status KvStore::Wait(const std::string& job_id, int attempt,
                           const std::vector<std::string>& keys, absl::Duration timeout,
                           const std::function<bool()>& cancelled) {
  if (keys.empty() || keys.size() > static_cast<size_t>(kMaxKvWaitKeys)) {
    return absl::InvalidArgumentError(
        absl::StrCat("wait for 1 to ", kMaxKvWaitKeys, " keys, got ", keys.size()));
  }
  for (const std::string& key : keys) KILN_RETURN_IF_ERROR(CheckKey(key));
  const absl::Time deadline = absl::Now() + timeout;
  const Scope scope{job_id, attempt};
  absl::MutexLock lock(&mu_);
  while (true) {
    const auto& present = data_[scope];
    size_t found = 0;
    for (const std::string& key : keys) found += present.count(key);
    if (found == keys.size()) return absl::OkStatus();
    if (cancelled && cancelled()) return absl::CancelledError("wait cancelled");
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("waited ", absl::FormatDuration(timeout),
                                                      " for ", keys.size() - found, " of ",
                                                      keys.size(), " keys"));
    }
    changed_.WaitWithTimeout(&mu_, std::min(deadline - now, absl::Milliseconds(100)));
  }
}

absl::Status KvStore::Load(const std::string& job_id, int attempt) {
  KILN_ASSIGN_OR_RETURN(auto keys, store_->KvLoad(job_id, attempt));
  absl::MutexLock lock(&mu_);
  data_[{job_id, attempt}] = std::move(keys);
  return absl::OkStatus();
}

void KvStore::Drop(const std::string& job_id, int below_attempt) {
  {
    absl::MutexLock lock(&mu_);
    for (auto it = data_.begin(); it != data_.end();) {
      if (it->first.first == job_id && it->first.second < below_attempt) {
        it = data_.erase(it);
      } else {
        ++it;
      }
    }
  }
  (void)store_->KvDrop(job_id, below_attempt);
}

}  // namespace kiln::scheduler
