// Table rendering, JSON, and human-readable numbers and times.
#include "client/cli/format.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"

namespace kiln::cli {

std::string Table::Render() const {
  std::vector<size_t> width(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  };
  measure(headers_);
  for (const auto& row : rows_) measure(row);
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  if (pretty && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string ShortDuration(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 0) return "0s";
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

std::string FormatAge(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0) return "-";
  return ShortDuration(absl::Now() - FromProto(ts)) + " ago";
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProto(ts), absl::LocalTimeZone());
}

std::string Thousands(double value) {
  std::string digits = absl::StrCat(static_cast<int64_t>(std::llround(value)));
  std::string out;
  const size_t start = digits[0] == '-' ? 1 : 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    out += digits[i];
    const size_t left = digits.size() - i - 1;
    if (i >= start && left > 0 && left % 3 == 0) out += ',';
  }
  return out;
}

std::string FormatProgress(const v1::JobProgress& p) {
  if (p.step() <= 0) return "";
  std::string out = absl::StrCat("step ", p.step(), "/", p.total_steps());
  absl::StrAppend(&out, absl::StrFormat("  loss %.4f", p.loss()));
  if (p.has_val_loss()) absl::StrAppend(&out, absl::StrFormat("  val %.4f", p.val_loss()));
  if (p.tokens_per_s() > 0) absl::StrAppend(&out, "  ", Thousands(p.tokens_per_s()), " tok/s");
  return out;
}

std::string StateName(v1::JobState state) { return v1::JobState_Name(state); }

std::string Truncate(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

}  // namespace kiln::cli
