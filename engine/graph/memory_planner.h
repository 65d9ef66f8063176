// The memory planner: decides where every value of a graph lives before anything runs.
// Parameters and gradients go to flat per-class buffers (so a ZeRO shard is an offset/length slice),
// inputs and constants to their own small regions, and activations plus kernel workspaces into one
// arena packed by liveness. See Note [Arena packing].
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/graph/graph.h"

namespace kiln::graph {

// Note [Arena packing]
// Liveness runs over the final node order: a value is live from the node that produces it to its
// last reader (graph outputs to the end). Views (reshape) and in-place outputs join the storage
// group of the value they alias; in-place is taken only when the node is the last reader of the
// whole group, the byte sizes match and the group lives in the arena (never a parameter or input).
// Groups are placed largest first, each at the smallest free gap among the groups live at the same
// time (best fit), else above them. A workspace is a group live for exactly its node.
// The result is compared in tests against the naive sum of every activation's size.

enum class Region : uint8_t { kArena, kParams, kGrads, kInputs, kConstants };
const char* RegionName(Region region);

struct Placement {
  Region region = Region::kArena;
  size_t offset = 0;  // bytes from the start of the region
};

struct MemoryPlan {
  std::vector<Placement> values;          // by ValueId (unplaced values: unused by any node)
  std::vector<bool> placed;               // by ValueId
  std::vector<size_t> workspace_offset;   // by NodeId, into the arena
  std::vector<size_t> workspace_bytes;    // by NodeId
  size_t arena_bytes = 0;                 // the planned peak of activations + workspaces
  size_t params_bytes = 0, grads_bytes = 0, inputs_bytes = 0, constants_bytes = 0;
  size_t naive_activation_bytes = 0;      // every activation in its own buffer, no reuse
  int num_inplace = 0;                    // outputs that reuse an input's buffer
  // Per parameter: element offset into the flat parameter buffer and element count; gradients use
  // the same offsets in the gradient buffer. Parameters (and gradients) share one dtype.
  std::vector<int64_t> param_offset, param_numel;
  int64_t param_elements = 0;  // flat buffer length, alignment padding included
  DType param_dtype = DType::kF32;
};

struct PlannerOptions {
  bool allow_inplace = true;
  size_t alignment = 64;
  // The flat parameter layout, when the caller fixes it (data parallelism pads buckets; see
  // engine/dist/bucket_layout.h): an element offset per parameter and the buffer length. Empty:
  // parameters follow each other in order, each aligned.
  std::vector<int64_t> param_offsets;
  int64_t param_elements = 0;
  // The parameters live outside the executor (ZeRO-3 keeps only a shard): no parameter region is
  // planned and no graph node may read a parameter value directly.
  bool external_params = false;
};

// `workspace_bytes` is indexed by node (empty = none).
absl::StatusOr<MemoryPlan> PlanMemory(const Graph& graph,
                                      const std::vector<size_t>& workspace_bytes,
                                      const PlannerOptions& options = {});

}  // namespace kiln::graph
