// Rendezvous key-value store: the few operations ranks need to find each other (Set, blocking Get,
// Wait, atomic Add), a prefix wrapper that scopes keys to a job attempt or a communicator, and the
// in-process implementation for threads of one process. See tcp_store.h for the TCP one; kilnd's
// key-value RPCs implement the same interface (only Set, Get and Add are required).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kiln::dist {

// Note [Store semantics]
// Values are arbitrary bytes (std::string may hold NULs). Set replaces and wakes every waiter. Get
// blocks until the key exists, so a rank may ask before another publishes; it fails with
// DeadlineExceeded naming the key when `timeout` passes, and with Unavailable when the store itself
// is gone (a dead TcpStore host). Add treats the value as a decimal int64 counter (absent = 0),
// so a counter can also be read with Get. Keys are never deleted: scope them with PrefixStore.
class Store {
 public:
  virtual ~Store() = default;

  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;
  // Atomically adds `delta` and returns the new value.
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;
  // Blocks until every key is set (one deadline for all). The default calls Get in turn.
  virtual absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout);
};

// A view of `base` that puts `prefix` in front of every key. Does not own `base`.
class PrefixStore : public Store {
 public:
  PrefixStore(Store* base, std::string prefix) : base_(base), prefix_(std::move(prefix)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string Key(absl::string_view key) const;

  Store* base_;
  std::string prefix_;
};

// The key prefix for one attempt of one job: "job/<job_id>/attempt/<attempt>/". A restarted gang
// uses a new attempt so it never reads the previous attempt's addresses.
std::string JobScope(absl::string_view job_id, int attempt);

// A store shared by threads of one process (tests, single-process runs).
class InProcessStore : public Store {
 public:
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string, std::less<>> values_ ABSL_GUARDED_BY(mu_);
};

// Shared by the implementations so that errors read the same everywhere.
absl::Status KeyTimeoutError(absl::string_view key, absl::Duration timeout);
// Parses a counter value; an empty string is 0.
absl::StatusOr<int64_t> ParseCounter(absl::string_view key, absl::string_view value);

}  // namespace kiln::dist
