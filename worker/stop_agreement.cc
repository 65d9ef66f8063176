// StopAgreement: publish this rank's first-seen boundary, learn the others', stop at max + 1.
#include "worker/stop_agreement.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kiln::worker {
namespace {

std::string Key(int rank) { return absl::StrCat("stop/", rank); }

}  // namespace

bool StopAgreement::ShouldStop(int64_t boundary, bool requested) {
  if (world_size_ <= 1 || unreachable_) return requested;
  if (stop_at_.has_value()) return boundary >= *stop_at_;
  if (!published_) {
    if (!requested) return false;
    if (absl::Status s = kv_->Set(Key(rank_), absl::StrCat(boundary)); !s.ok()) {
      std::fprintf(stderr,
                   "kiln-worker: cannot agree on the stop with the other ranks (%s); "
                   "stopping now\n",
                   s.ToString().c_str());
      unreachable_ = true;
      return true;
    }
    published_ = true;
    first_seen_[rank_] = boundary;
  }
  for (int r = 0; r < world_size_; ++r) {
    if (first_seen_.count(r) > 0) continue;
    absl::StatusOr<std::optional<std::string>> value = kv_->Get(Key(r));
    if (!value.ok()) {
      std::fprintf(stderr,
                   "kiln-worker: cannot agree on the stop with the other ranks (%s); "
                   "stopping now\n",
                   value.status().ToString().c_str());
      unreachable_ = true;
      return true;
    }
    int64_t seen = 0;
    if (!value->has_value() || !absl::SimpleAtoi(**value, &seen)) return false;
    first_seen_[r] = seen;
  }
  int64_t last = 0;
  for (const auto& [r, seen] : first_seen_) last = std::max(last, seen);
  stop_at_ = last + 1;
  std::fprintf(stderr, "kiln-worker: all %d ranks stop at step %lld\n", world_size_,
               static_cast<long long>(*stop_at_));
  return boundary >= *stop_at_;
}

}  // namespace kiln::worker
