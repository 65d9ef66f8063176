// The Communicator conformance suite: every collective x dtype x size on one rank's communicator,
// checked against values this file computes independently (exact integer arithmetic). It runs
// unchanged inside a rank thread (in-process harness) and inside a rank process (the Gloo
// multi-process harness), so it reports failures as strings instead of asserting.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/dist/communicator.h"
#include "engine/dist/store.h"

namespace kiln::dist::testing {

struct ConformanceOptions {
  // Element counts for all-reduce, broadcast and send/recv; for reduce-scatter, all-gather and
  // all-to-all the per-rank chunk is PaddedChunk(size, world) (the padding recipe under test).
  std::vector<int64_t> sizes = {0, 1, 7, 1000, 1000003};
  // Patience for each Work::Wait.
  absl::Duration wait = absl::Seconds(300);
  // Used by the barrier check (every rank counts in before the barrier); may be null.
  Store* store = nullptr;
};

struct ConformanceReport {
  int checks = 0;
  std::vector<std::string> failures;  // empty when everything matched
};

ConformanceReport RunConformance(Communicator& comm, const ConformanceOptions& options);

// Runs a fixed sequence of reductions (f32, bf16; sum, avg; all-reduce and reduce-scatter) on
// pseudo-random data of `n` elements and returns a hash of every result byte, for comparing
// separate runs bit for bit. Errors go to *error.
uint64_t ReductionDigest(Communicator& comm, int64_t n, std::string* error);

}  // namespace kiln::dist::testing
