// The ZeRO graph pass (stages 2 and 3), run after autodiff and before planning:
//  - stage >= 2: every bucket's accumulate_grad nodes become one zero_reduce_grads node, placed
//    where the bucket's last gradient is final; parameters lose their gradient slots.
//  - stage 3: every read of a parameter becomes a view into its bucket's gathered buffer, gathered
//    by a zero_gather_start / zero_gather_wait pair before the bucket's first use in forward (and
//    again in backward), the next bucket's start placed one bucket ahead (prefetch). Parameters
//    then live outside the executor (PlannerOptions::external_params).
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "engine/dist/zero_runtime.h"
#include "engine/graph/graph.h"

namespace kiln::dist {

absl::Status ApplyZeroPass(graph::Graph& graph, const std::shared_ptr<ZeroRuntime>& runtime);

}  // namespace kiln::dist
