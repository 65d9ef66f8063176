// Checks of client-supplied identifiers (see Note [Bounded inputs] in limits.h).
#include "scheduler/limits.h"

#include "absl/strings/str_cat.h"
#include "scheduler/job_store.h"

namespace kiln::scheduler {

absl::Status CheckJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  if (job_id.size() > kMaxJobIdBytes || JobStore::SeqOf(job_id) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", job_id.substr(0, kMaxJobIdBytes), "\" is not a job id (job-<n>)"));
  }
  return absl::OkStatus();
}

absl::Status CheckSubmissionId(const std::string& id) {
  if (id.size() > kMaxSubmissionIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("submission_id is ", id.size(),
                                                   " bytes; the limit is ", kMaxSubmissionIdBytes));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError("submission_id may contain only [A-Za-z0-9._:-]");
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln::scheduler
