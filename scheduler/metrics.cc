// Histogram bookkeeping and the Prometheus text exposition of kilnd's metrics.
#include "scheduler/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln::scheduler {
namespace {

const char* CodeName(int code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

void Header(std::string* out, const char* name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  uint64_t cumulative = 0;
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < kBounds.size() ? absl::StrFormat("%g", kBounds[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", le, "\"} ", cumulative, "\n");
  }
  const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", absl::StrFormat("%.6f", sum_micros_.load() / 1e6),
                  "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count_.load(), "\n");
}

Metrics::Metrics(const std::vector<std::string>& methods) {
  for (const std::string& m : methods) latency_[m];
}

void Metrics::ObserveRpc(const std::string& method, double seconds, int grpc_code) {
  auto it = latency_.find(method);
  if (it != latency_.end()) it->second.Observe(seconds);
  absl::MutexLock lock(&mu_);
  ++calls_[{method, grpc_code}];
}

std::string Metrics::Render(const ClusterGauges& g) const {
  std::string out;
  Header(&out, "kiln_jobs", "gauge", "Jobs by state (queued and running ones).");
  for (const auto& [state, count] : g.jobs_by_state) {
    absl::StrAppend(&out, "kiln_jobs{state=\"", state, "\"} ", count, "\n");
  }
  Header(&out, "kiln_jobs_submitted_total", "counter",
         "Jobs accepted since the store was created.");
  absl::StrAppend(&out, "kiln_jobs_submitted_total ", g.jobs_total, "\n");
  Header(&out, "kiln_queue_length", "gauge", "Jobs waiting for slots.");
  absl::StrAppend(&out, "kiln_queue_length ", g.queue_length, "\n");
  Header(&out, "kiln_live_workers", "gauge", "Worker processes alive.");
  absl::StrAppend(&out, "kiln_live_workers ", g.live_workers, "\n");
  Header(&out, "kiln_slots", "gauge", "Worker slots on this node.");
  absl::StrAppend(&out, "kiln_slots{kind=\"total\"} ", g.slots_total, "\n");
  absl::StrAppend(&out, "kiln_slots{kind=\"used\"} ", g.slots_used, "\n");
  Header(&out, "kiln_draining", "gauge", "1 while kilnd drains for shutdown.");
  absl::StrAppend(&out, "kiln_draining ", g.draining ? 1 : 0, "\n");
  Header(&out, "kiln_restarts_total", "counter", "Gang restarts after failed attempts.");
  absl::StrAppend(&out, "kiln_restarts_total ", restarts_.load(), "\n");
  Header(&out, "kiln_heartbeats_total", "counter", "Worker heartbeats received.");
  absl::StrAppend(&out, "kiln_heartbeats_total ", heartbeats_.load(), "\n");
  Header(&out, "kiln_rpc_duration_seconds", "histogram", "Unary RPC latency by method.");
  for (const auto& [method, histogram] : latency_) {
    histogram.Render("kiln_rpc_duration_seconds", absl::StrCat("method=\"", method, "\""), &out);
  }
  Header(&out, "kiln_rpcs_total", "counter", "RPCs by method and status code.");
  absl::MutexLock lock(&mu_);
  for (const auto& [key, count] : calls_) {
    absl::StrAppend(&out, "kiln_rpcs_total{method=\"", key.first, "\",code=\"",
                    CodeName(key.second), "\"} ", count, "\n");
  }
  return out;
}

}  // namespace kiln::scheduler
