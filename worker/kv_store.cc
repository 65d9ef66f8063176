// KvStore: dist::Store over kilnd's key-value RPCs.
#include "worker/kv_store.h"

#include "absl/strings/str_cat.h"

namespace kiln::worker {

absl::Status KvStore::Set(absl::string_view key, absl::string_view value) {
  return kv_->Set(std::string(key), std::string(value));
}

absl::StatusOr<std::string> KvStore::Get(absl::string_view key, absl::Duration timeout) {
  const std::string k(key);
  const absl::Status waited = kv_->Wait({k}, timeout);
  if (!waited.ok()) {
    if (absl::IsDeadlineExceeded(waited)) {
      return absl::DeadlineExceededError(absl::StrCat("key ", k, " not set within ",
                                                      absl::FormatDuration(timeout)));
    }
    return waited;
  }
  absl::StatusOr<std::optional<std::string>> value = kv_->Get(k);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return absl::InternalError(absl::StrCat("key ", k, " vanished"));
  return **value;
}

absl::StatusOr<int64_t> KvStore::Add(absl::string_view key, int64_t delta) {
  return kv_->Add(std::string(key), delta);
}

absl::Status KvStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  return kv_->Wait(keys, timeout);
}

}  // namespace kiln::worker
