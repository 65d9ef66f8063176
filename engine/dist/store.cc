// Store's default Wait, PrefixStore, JobScope and InProcessStore (a mutex-guarded map whose
// waiters block on the mutex's condition until the key appears).
#include "engine/dist/store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kiln::dist {

absl::Status Store::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> value =
        Get(key, std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!value.ok()) return value.status();
  }
  return absl::OkStatus();
}

absl::Status KeyTimeoutError(absl::string_view key, absl::Duration timeout) {
  return absl::DeadlineExceededError(
      absl::StrCat("store key '", key, "' was not set within ", absl::FormatDuration(timeout)));
}

absl::StatusOr<int64_t> ParseCounter(absl::string_view key, absl::string_view value) {
  if (value.empty()) return 0;
  int64_t parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed)) {
    return absl::FailedPreconditionError(
        absl::StrCat("store key '", key, "' holds a value that is not a counter"));
  }
  return parsed;
}

std::string PrefixStore::Key(absl::string_view key) const { return absl::StrCat(prefix_, key); }

absl::Status PrefixStore::Set(absl::string_view key, absl::string_view value) {
  return base_->Set(Key(key), value);
}

absl::StatusOr<std::string> PrefixStore::Get(absl::string_view key, absl::Duration timeout) {
  return base_->Get(Key(key), timeout);
}

absl::StatusOr<int64_t> PrefixStore::Add(absl::string_view key, int64_t delta) {
  return base_->Add(Key(key), delta);
}

absl::Status PrefixStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const std::string& key : keys) full.push_back(Key(key));
  return base_->Wait(full, timeout);
}

std::string JobScope(absl::string_view job_id, int attempt) {
  return absl::StrCat("job/", job_id, "/attempt/", attempt, "/");
}

absl::Status InProcessStore::Set(absl::string_view key, absl::string_view value) {
  absl::MutexLock lock(&mu_);
  values_[std::string(key)] = std::string(value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> InProcessStore::Get(absl::string_view key, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return values_.find(key) != values_.end();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&present), timeout)) {
    return KeyTimeoutError(key, timeout);
  }
  return values_.find(key)->second;
}

absl::StatusOr<int64_t> InProcessStore::Add(absl::string_view key, int64_t delta) {
  absl::MutexLock lock(&mu_);
  std::string& value = values_[std::string(key)];
  absl::StatusOr<int64_t> current = ParseCounter(key, value);
  if (!current.ok()) return current.status();
  const int64_t updated = *current + delta;
  value = absl::StrCat(updated);
  return updated;
}

}  // namespace kiln::dist
