// Adapter from our Store to gloo::rendezvous::Store, so that gloo's connectFullMesh exchanges
// pair addresses through whatever store the job uses (TcpStore, kilnd's key-value RPCs, ...).
// Gloo reports errors by exception: the adapter throws gloo::IoException and keeps the Status.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/dist/store.h"
#include "gloo/rendezvous/store.h"

namespace kiln::dist {

class GlooStore : public gloo::rendezvous::Store {
 public:
  // `timeout` bounds gloo's get() and wait() calls that carry no timeout of their own.
  GlooStore(kiln::dist::Store* store, absl::Duration timeout) : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The first error the store returned (gloo's exception carries only its text).
  const absl::Status& error() const { return error_; }

 private:
  [[noreturn]] void Throw(const absl::Status& status);

  kiln::dist::Store* store_;
  absl::Duration timeout_;
  absl::Status error_;
};

}  // namespace kiln::dist
