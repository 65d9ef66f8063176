// Note [Bounded inputs]: every request field that a client controls has a limit, checked before any
// work is done, so that no call can make kilnd allocate, store or scan without bound. Spec limits
// live in proto/spec_issues.h and proto/spec_validate.h; key-value limits in kv_store.h.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace kiln::scheduler {

inline constexpr size_t kMaxSubmissionIdBytes = 128;
inline constexpr size_t kMaxJobIdBytes = 32;
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxReasonBytes = 256;
inline constexpr size_t kMaxExitMessageBytes = 4096;
inline constexpr int kMaxPageSize = 1000;
inline constexpr int kDefaultPageSize = 100;
inline constexpr int kMaxMetricPoints = 100000;
inline constexpr int kDefaultMetricPoints = 10000;
inline constexpr int kMaxReportedPoints = 1000;
inline constexpr int kMaxLogChunkBytes = 1 << 20;
inline constexpr int kDefaultLogChunkBytes = 64 << 10;
inline constexpr int kMaxStreams = 256;           // concurrent WatchJob + StreamLogs + KV Wait
inline constexpr int kMaxMessageBytes = 4 << 20;  // any gRPC message

// "job-<n>" of bounded length.
absl::Status CheckJobId(const std::string& job_id);
// Up to 128 of [A-Za-z0-9._:-].
absl::Status CheckSubmissionId(const std::string& submission_id);

inline void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t nanos = absl::ToUnixNanos(t);
  ts->set_seconds(nanos / 1000000000);
  ts->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

inline absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace kiln::scheduler
