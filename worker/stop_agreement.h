// StopAgreement: the ranks of a data-parallel gang agree, through kilnd's key-value store, on the
// step boundary at which they all honour a stop request (cancel, drain, coordinator loss), so that
// every rank enters the final checkpoint together. See Note [Agreeing on a stop].
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "worker/kv_client.h"

namespace kiln::worker {

// Note [Agreeing on a stop]
// A stop request reaches each rank on its own (a SIGTERM per process group, a heartbeat reply, a
// lost coordinator), while the trainer polls ShouldStop() once per step boundary on each rank. If
// rank 0 sees the request at boundary k and starts the collective checkpoint while rank 1 saw
// nothing yet and starts step k+1's gradient all-reduce, the collectives do not match and Gloo
// aborts the process (about one cancel in six of a dp=2 MLP job before this agreement: SIGABRT
// with "op.preamble.length <= op.nbytes", and no checkpoint). So:
//  - a rank that first sees the request at boundary f publishes stop/<rank> = f and trains on;
//  - at every later boundary it reads the keys of the ranks it has not heard from;
//  - once every rank's f is known, all stop at S = max(f) + 1.
// Every rank can read every key by boundary S: the ranks are in lockstep (each step ends with a
// collective), so a rank completes step S only after every other rank has started it, and each
// rank publishes its f <= S - 1 before starting step f + 1. Ranks that know every f earlier compute
// the same S. Before a request no RPC is made; after one, one Get per unheard peer per step. If
// kilnd cannot be reached (coordinator loss) the rank stops at once, as it did without agreement.
// The trainer could agree for free by adding the flag to its per-step loss all-reduce
// (engine/train); this class is the worker's stand-in until it does.
class StopAgreement {
 public:
  StopAgreement(KvClient* kv, int rank, int world_size)
      : kv_(kv), rank_(rank), world_size_(world_size) {}

  // Called at each step boundary (`boundary` = optimizer steps completed) with whether a stop was
  // requested locally; true when this rank must stop now.
  bool ShouldStop(int64_t boundary, bool requested);

 private:
  KvClient* kv_;
  const int rank_;
  const int world_size_;
  bool published_ = false;
  bool unreachable_ = false;
  std::map<int, int64_t> first_seen_;  // rank -> the boundary it first saw the request at
  std::optional<int64_t> stop_at_;
};

}  // namespace kiln::worker
