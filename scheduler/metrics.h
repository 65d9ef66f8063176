// kilnd's Prometheus metrics: RPC latency histograms and counters kept here, job and worker gauges
// read from the coordinator at scrape time, all rendered in the Prometheus text format.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace kiln::scheduler {

class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

  void Observe(double seconds);
  // Appends `name_bucket{labels,le=...}`, `name_sum`, `name_count` lines.
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};
};

// The gauges the coordinator reports at scrape time.
struct ClusterGauges {
  std::map<std::string, int> jobs_by_state;  // state name -> count (active states only)
  int64_t jobs_total = 0;                    // jobs ever accepted
  int queue_length = 0;
  int live_workers = 0;
  int slots_total = 0;
  int slots_used = 0;
  bool draining = false;
};

class Metrics {
 public:
  // Registers the RPC methods up front so that recording needs no lock.
  explicit Metrics(const std::vector<std::string>& methods);

  void ObserveRpc(const std::string& method, double seconds, int grpc_code);
  void CountRestart() { restarts_.fetch_add(1); }
  void CountHeartbeat() { heartbeats_.fetch_add(1); }

  std::string Render(const ClusterGauges& gauges) const;

 private:
  std::map<std::string, Histogram> latency_;  // fixed after construction
  std::atomic<uint64_t> restarts_{0};
  std::atomic<uint64_t> heartbeats_{0};
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::scheduler
