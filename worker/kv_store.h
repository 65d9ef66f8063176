// kilnd's key-value store as the engine's rendezvous Store (engine/dist/store.h): what a kiln-worker
// hands to the trainer so that its ranks find each other (Gloo addresses) through the coordinator.
// Keys are already scoped to this job and attempt by kilnd.
#pragma once

#include "engine/dist/store.h"
#include "worker/kv_client.h"

namespace kiln::worker {

class KvStore : public dist::Store {
 public:
  explicit KvStore(KvClient* kv) : kv_(kv) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;

 private:
  KvClient* kv_;
};

}  // namespace kiln::worker
