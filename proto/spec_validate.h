// Semantic checks of a JobSpec with defaults applied: family-specific requirements, divisibility of
// heads, ranges, enumerated strings, and consistency between sections (dp * pp * tp == workers,
// data.seq_len <= model.max_seq_len, ...). Each issue names its field path.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "kiln/v1/job.pb.h"
#include "proto/spec_issues.h"

namespace kiln::spec {

inline constexpr int kMaxWorkers = 1024;
inline constexpr size_t kMaxNameBytes = 128;
inline constexpr int kMaxLabels = 32;
inline constexpr size_t kMaxLabelKeyBytes = 63;
inline constexpr size_t kMaxLabelValueBytes = 256;

std::vector<SpecIssue> ValidateSpec(const kiln::v1::JobSpec& spec);

// ApplyDefaults + ValidateSpec for a spec that did not come from YAML (a proto over gRPC).
absl::Status NormalizeSpec(kiln::v1::JobSpec* spec);

}  // namespace kiln::spec
