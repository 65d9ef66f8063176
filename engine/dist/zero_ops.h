// The graph ops through which a planned graph drives ZeroRuntime (ZeRO 2/3):
//   zero_reduce_grads(g_0, ..., g_k): copies one bucket's finished gradients into a staging buffer
//     and starts their reduce-scatter (no outputs; a side effect).
//   zero_gather_start() -> full: starts gathering one bucket's parameters into `full`.
//   zero_gather_wait(full) -> full: waits for that gather (in place).
// Attributes carry the runtime, so the ops are only built by the ZeRO pass (zero_pass.h).
#pragma once

#include <memory>
#include <vector>

#include "engine/core/dtype.h"

namespace kiln::dist {

class ZeroRuntime;

struct ZeroOpAttrs {
  std::shared_ptr<ZeroRuntime> runtime;
  int bucket = 0;
  std::vector<int> members;  // zero_reduce_grads: the bucket positions of its inputs
  int gather_id = 0;   // pairs a start with its wait
  int64_t length = 0;  // zero_gather_start: elements of the gathered bucket
  DType dtype = DType::kF32;
};

}  // namespace kiln::dist
