// Reading the per-rank log files of a job for StreamLogs: a chunk from an offset, optionally cut at
// the last complete line so that merged output never interleaves half lines.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kiln::scheduler {

std::string RankLogPath(const std::string& log_dir, int rank);

// Up to `max_bytes` from `offset`. With `whole_lines`, the chunk ends after its last '\n' (unless a
// single line is longer than max_bytes). A missing file reads as empty.
absl::StatusOr<std::string> ReadLogChunk(const std::string& path, int64_t offset, int max_bytes,
                                         bool whole_lines);

}  // namespace kiln::scheduler
