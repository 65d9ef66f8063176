// Formatting of spec issues into one readable status line, and the edit distance behind the
// loader's "did you mean" suggestions.
#include "proto/spec_issues.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kiln::spec {
namespace {

constexpr size_t kMaxIssuesShown = 3;

// The mark of `path` or of its nearest ancestor that has one ("a.b.c" -> "a.b" -> "a").
const SourceMark* FindMark(const SourceMap* marks, std::string path) {
  if (marks == nullptr) return nullptr;
  while (true) {
    auto it = marks->find(path);
    if (it != marks->end()) return &it->second;
    const size_t cut = path.find_last_of(".[");
    if (cut == std::string::npos || cut == 0) return nullptr;
    path.resize(cut);
  }
}

std::string FormatOne(const SpecIssue& issue, const std::string& source, const SourceMap* marks) {
  std::string out;
  if (const SourceMark* mark = FindMark(marks, issue.path); mark != nullptr) {
    out = absl::StrCat(source.empty() ? std::string("spec") : source, ":", mark->line, ":",
                       mark->column, ": ");
  } else if (!source.empty()) {
    out = absl::StrCat(source, ": ");
  }
  if (!issue.path.empty()) absl::StrAppend(&out, issue.path, ": ");
  absl::StrAppend(&out, issue.message);
  return out;
}

}  // namespace

absl::Status IssuesToStatus(const std::vector<SpecIssue>& issues, const std::string& source,
                            const SourceMap* marks) {
  if (issues.empty()) return absl::OkStatus();
  std::string message;
  for (size_t i = 0; i < issues.size() && i < kMaxIssuesShown; ++i) {
    if (i > 0) message += "; ";
    message += FormatOne(issues[i], source, marks);
  }
  if (issues.size() > kMaxIssuesShown) {
    absl::StrAppend(&message, " (and ", issues.size() - kMaxIssuesShown, " more)");
  }
  return absl::InvalidArgumentError(message);
}

int EditDistance(const std::string& a, const std::string& b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace kiln::spec
