// The Gloo backend: collectives between processes over TCP with Debian's libgloo. Ranks connect
// in a full mesh through the rendezvous Store; collectives use Gloo's algorithms (ring all-reduce,
// ring all-gather, binomial broadcast, pairwise all-to-all, barrier) with our reduction kernels.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/dist/backend.h"
#include "engine/dist/communicator.h"
#include "engine/dist/store.h"

namespace kiln::dist {

// Connects rank `rank` of `world` to its peers; `store` is used only during this call. Fails with
// the store's error (naming the missing key) when a peer does not show up within options.timeout.
absl::StatusOr<std::unique_ptr<Backend>> MakeGlooBackend(Store* store, int rank, int world,
                                                         const CommunicatorOptions& options);

}  // namespace kiln::dist
