// Training checkpoints on disk: one directory per step under a run directory, committed atomically
// (written under a temporary name, every file fsynced, renamed, then the `latest` pointer
// replaced), so a crash at any moment leaves the previous checkpoint loadable. The oldest
// directories beyond `keep` are removed after a commit. What goes inside is the caller's: named
// safetensors files and a JSON state document.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace kiln::ckpt {

struct CheckpointFiles {
  // file name (e.g. "model.safetensors") -> tensors by name
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> safetensors;
  std::string state_json;  // written last, as state.json: its presence marks completeness
};

// Name of the directory for `step`: "step-00000050".
std::string CheckpointDirName(int64_t step);

// Writes and commits `files` as run_dir/step-N, then prunes to `keep` checkpoints (0: keep all).
// Returns the committed directory. The three steps below compose it; data-parallel ranks use them
// directly: one rank begins, every rank writes its files, that rank finishes.
absl::StatusOr<std::string> CommitCheckpoint(const std::string& run_dir, int64_t step,
                                             const CheckpointFiles& files, int keep);

// Clears leftovers of interrupted saves and creates the temporary directory for `step`; returns it.
absl::StatusOr<std::string> BeginCheckpoint(const std::string& run_dir, int64_t step);
// The temporary directory BeginCheckpoint creates (for the other ranks).
std::string CheckpointTempDir(const std::string& run_dir, int64_t step);
// Writes state.json last, makes the directory durable, renames it into place, points `latest` at
// it and prunes to `keep`. Returns the committed directory.
absl::StatusOr<std::string> FinishCheckpoint(const std::string& run_dir, int64_t step,
                                             const std::string& state_json, int keep);

// A checkpoint directory, or a run directory (its `latest` checkpoint). NotFound when there is none.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path);

// Reads state.json of a checkpoint directory.
absl::StatusOr<std::string> ReadCheckpointState(const std::string& checkpoint_dir);

}  // namespace kiln::ckpt
