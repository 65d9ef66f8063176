// The rendezvous store as a worker sees it: Set / Get / Wait / Add against kilnd's key-value store,
// scoped to this job and attempt. A dist::Store backed by kilnd is a thin adapter over this class.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/coordinator_link.h"

namespace kiln::worker {

class KvClient {
 public:
  explicit KvClient(CoordinatorLink* link) : link_(link) {}

  absl::Status Set(const std::string& key, const std::string& value);
  // nullopt when the key is absent.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key);
  // Blocks until every key exists; DEADLINE_EXCEEDED after `timeout`.
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout);
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);

 private:
  CoordinatorLink* link_;
};

}  // namespace kiln::worker
