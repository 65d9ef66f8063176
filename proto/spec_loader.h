// YAML text -> kiln.v1.JobSpec. The loader walks the proto descriptor with yaml-cpp, so every error
// names its field path and line: unknown keys (with a did-you-mean), wrong types, out-of-range
// integers, huge strings and broken YAML are refused. LoadSpec* then applies the documented
// defaults (spec_defaults.h) and the semantic checks (spec_validate.h). kiln-train, the kiln CLI
// and kilnd all load specs through here.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kiln/v1/job.pb.h"
#include "proto/spec_issues.h"

namespace kiln::spec {

struct LoadOptions {
  // Names the text in error messages ("job.yaml"); empty prints "spec".
  std::string source_name;
  // Relative paths (data.train, data.val, model.init_from, checkpoint.dir) resolve against this
  // absolute directory. Empty: relative paths are an error.
  std::string base_dir;
};

// Parses `text` into `out` (cleared first) without defaults or semantic checks, recording where
// each field sits in `marks` (may be null). Errors are InvalidArgument with source, line and path.
absl::Status ParseSpecYaml(const std::string& text, const LoadOptions& options,
                           kiln::v1::JobSpec* out, SourceMap* marks);

// ParseSpecYaml + ResolvePaths + ApplyDefaults + ValidateSpec, errors located in the text.
absl::StatusOr<kiln::v1::JobSpec> LoadSpecYaml(const std::string& text, const LoadOptions& options);

// Reads a file (at most kMaxSpecBytes) and loads it with base_dir = the file's directory.
absl::StatusOr<kiln::v1::JobSpec> LoadSpecFile(const std::string& path);

// Makes data.train, data.val, model.init_from and checkpoint.dir absolute against `base_dir`.
// Appends an issue for each relative path when base_dir is empty or not absolute.
void ResolvePaths(const std::string& base_dir, kiln::v1::JobSpec* spec,
                  std::vector<SpecIssue>* issues);

}  // namespace kiln::spec
