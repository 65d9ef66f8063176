// The NCCL backend: collectives between GPUs (one device per rank) with NCCL, behind the same
// Backend interface as Gloo. The unique id travels through the rendezvous Store; communication
// runs on its own stream, ordered after the compute stream with an event; every wait polls NCCL's
// asynchronous error state and the deadline, and a failure aborts the communicator so that a dead
// peer fails the job instead of hanging it. See Note [NCCL waits] in nccl_backend.cc.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/dist/backend.h"
#include "engine/dist/communicator.h"
#include "engine/dist/store.h"

namespace kiln::dist {

// Connects `rank` of `world` on CUDA device options.cuda_device (-1: rank modulo the device
// count). FailedPrecondition "no CUDA device available: ..." without a device, or in a build
// without CUDA; the store's error when a peer does not publish the id within options.timeout.
absl::StatusOr<std::unique_ptr<Backend>> MakeNcclBackend(Store* store, int rank, int world,
                                                         const CommunicatorOptions& options);

}  // namespace kiln::dist
