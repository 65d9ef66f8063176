// The in-process backend: the ranks are threads of one process that meet in a shared hub. It
// exists to unit-test code above the Communicator without sockets; results are deterministic
// (ranks reduced in rank order) and failures and timeouts behave as in the Gloo backend.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/dist/backend.h"
#include "engine/dist/communicator.h"
#include "engine/dist/store.h"

namespace kiln::dist {

// Rank 0 creates the hub and publishes its id in `store`; the other ranks look it up in a
// process-wide registry. Fails when the ranks are not in one process or do not all arrive.
absl::StatusOr<std::unique_ptr<Backend>> MakeInProcessBackend(Store* store, int rank, int world,
                                                              const CommunicatorOptions& options);

}  // namespace kiln::dist
