// Spec errors that name their field path ("train.precision") and, when the spec came from YAML,
// where in the file the field is. The loader, the validator and kilnd all report through this so
// every refusal reads the same: `job.yaml:12:14: train.precision: "fp8" is not one of ...`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kiln::spec {

// Bounds on what a spec may contain, whether it arrives as YAML or as a proto.
inline constexpr size_t kMaxSpecBytes = 1 << 20;  // YAML text
inline constexpr size_t kMaxStringBytes = 4096;   // any string value
inline constexpr size_t kMaxKeyBytes = 256;       // any mapping key

struct SpecIssue {
  std::string path;     // "model.d_ff", "labels[\"team\"]", "" for the whole document
  std::string message;  // "is required for family llama"
};

// 1-based line and column of a field in the YAML text.
struct SourceMark {
  int line = 0;
  int column = 0;
};

// Field path -> where its value (or key) sits in the YAML text.
using SourceMap = std::map<std::string, SourceMark>;

// One line: the first few issues joined by "; ", each as `source:line:col: path: message` when the
// location is known (falling back to the nearest enclosing field that has one), else
// `path: message`. Returns OK when `issues` is empty, InvalidArgument otherwise.
absl::Status IssuesToStatus(const std::vector<SpecIssue>& issues, const std::string& source = "",
                            const SourceMap* marks = nullptr);

// Levenshtein distance, for "did you mean" suggestions.
int EditDistance(const std::string& a, const std::string& b);

}  // namespace kiln::spec
