// Output helpers for the `kiln` CLI: aligned tables for people, proto JSON for scripts, and the
// short forms of durations, ages, rates and progress that both tables and --follow use.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "kiln/v1/jobs.pb.h"

namespace kiln::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Proto JSON with the .proto field names and every field printed (enums by name: "RUNNING").
std::string ToJson(const google::protobuf::Message& message, bool pretty = true);

// 45s, 3m12s, 1h02m, 2d03h.
std::string ShortDuration(absl::Duration d);
// "3m ago", or "-" when unset.
std::string FormatAge(const google::protobuf::Timestamp& ts);
// "2024-05-01 12:00:03" in local time, or "-".
std::string FormatTime(const google::protobuf::Timestamp& ts);
// 1234567 -> "1,234,567"
std::string Thousands(double value);
// "step 120/1000  loss 3.4512  1,234 tok/s", or "" before the first step.
std::string FormatProgress(const v1::JobProgress& progress);
std::string StateName(v1::JobState state);
std::string Truncate(const std::string& s, size_t n);
absl::Time FromProto(const google::protobuf::Timestamp& ts);

}  // namespace kiln::cli
