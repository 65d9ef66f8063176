// JobService handlers. Unary calls are authenticated, timed and forwarded to the Coordinator; the
// streams poll the store for new events, metrics and log bytes, waking on coordinator changes.
#include "scheduler/job_service.h"

#include <climits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "scheduler/auth.h"
#include "scheduler/limits.h"
#include "scheduler/log_files.h"
#include "scheduler/rpc_util.h"

namespace kiln::scheduler {
namespace {

// Holds one of the bounded stream slots for the duration of a stream.
class StreamSlot {
 public:
  explicit StreamSlot(std::atomic<int>* count) : count_(count) {
    ok_ = count_->fetch_add(1) < kMaxStreams;
  }
  ~StreamSlot() { count_->fetch_sub(1); }
  bool ok() const { return ok_; }

 private:
  std::atomic<int>* count_;
  bool ok_;
};

// Whether a watcher should hear about the change from `a` to `b`.
bool Changed(const v1::Job& a, const v1::Job& b) {
  if (a.state() != b.state() || a.reason() != b.reason() || a.attempt() != b.attempt() ||
      a.restarts() != b.restarts() || a.cancel_requested() != b.cancel_requested() ||
      a.queue_position() != b.queue_position() || a.ranks_size() != b.ranks_size() ||
      a.last_checkpoint().step() != b.last_checkpoint().step()) {
    return true;
  }
  for (int r = 0; r < a.ranks_size(); ++r) {
    if (a.ranks(r).state() != b.ranks(r).state() || a.ranks(r).pid() != b.ranks(r).pid()) {
      return true;
    }
  }
  return false;
}

constexpr int kStreamBatch = 500;

}  // namespace

std::vector<std::string> JobServiceImpl::MethodNames() {
  return {"SubmitJob", "GetJob", "ListJobs", "CancelJob", "GetJobMetrics", "ListNodes"};
}

absl::Status JobServiceImpl::Authenticate(const grpc::ServerContext& context) const {
  if (user_token_.empty()) return absl::OkStatus();
  const std::string token = BearerToken(context);
  if (token.empty()) {
    return absl::UnauthenticatedError("kilnd requires `authorization: Bearer <token>`");
  }
  if (!TokensEqual(token, user_token_)) return absl::UnauthenticatedError("invalid token");
  return absl::OkStatus();
}

bool JobServiceImpl::StreamOver(grpc::ServerContext* context) const {
  return context->IsCancelled() || shutting_down_->load();
}

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request,
                                       v1::SubmitJobResponse* response) {
  RpcScope scope(metrics_, "SubmitJob");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  absl::StatusOr<v1::SubmitJobResponse> r = coordinator_->Submit(*request);
  if (r.ok()) *response = *std::move(r);
  return scope.Done(r.status());
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  RpcScope scope(metrics_, "GetJob");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  absl::StatusOr<v1::Job> r = coordinator_->GetJob(request->job_id(), request->include_events());
  if (r.ok()) *response = *std::move(r);
  return scope.Done(r.status());
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  RpcScope scope(metrics_, "ListJobs");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  absl::StatusOr<v1::ListJobsResponse> r = coordinator_->ListJobs(*request);
  if (r.ok()) *response = *std::move(r);
  return scope.Done(r.status());
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request, v1::Job* response) {
  RpcScope scope(metrics_, "CancelJob");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  absl::StatusOr<v1::Job> r =
      coordinator_->Cancel(request->job_id(), request->grace_s(), request->reason());
  if (r.ok()) *response = *std::move(r);
  return scope.Done(r.status());
}

grpc::Status JobServiceImpl::GetJobMetrics(grpc::ServerContext* context,
                                           const v1::GetJobMetricsRequest* request,
                                           v1::GetJobMetricsResponse* response) {
  RpcScope scope(metrics_, "GetJobMetrics");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  absl::StatusOr<v1::GetJobMetricsResponse> r = coordinator_->GetMetrics(*request);
  if (r.ok()) *response = *std::move(r);
  return scope.Done(r.status());
}

grpc::Status JobServiceImpl::ListNodes(grpc::ServerContext* context,
                                       const v1::ListNodesRequest* request,
                                       v1::ListNodesResponse* response) {
  RpcScope scope(metrics_, "ListNodes");
  if (absl::Status s = Authenticate(*context); !s.ok()) return scope.Done(s);
  *response = coordinator_->ListNodes();
  return scope.Done(absl::OkStatus());
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobUpdate>* writer) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return ToGrpc(s);
  StreamSlot slot(streams_);
  if (!slot.ok()) return ToGrpc(absl::ResourceExhaustedError("too many open streams"));
  absl::StatusOr<v1::Job> job = coordinator_->GetJob(request->job_id(), false);
  if (!job.ok()) return ToGrpc(job.status());
  JobStore* store = coordinator_->store();
  int64_t last_event = 0, last_row = 0;
  if (!request->history()) {
    if (absl::Status s = store->Cursors(request->job_id(), &last_event, &last_row); !s.ok()) {
      return ToGrpc(s);
    }
  }
  v1::JobUpdate first;
  *first.mutable_job() = *job;
  if (!writer->Write(first)) return grpc::Status::OK;
  if (request->after_event_seq() > 0) last_event = request->after_event_seq();
  v1::Job sent = *std::move(job);
  while (!StreamOver(context)) {
    const uint64_t version = coordinator_->Version();
    // The snapshot first, then the events: every event up to the snapshot's state is then read
    // in this round, and the final state goes out after the events that led to it.
    absl::StatusOr<v1::Job> now = coordinator_->GetJob(request->job_id(), false);
    if (!now.ok()) return ToGrpc(now.status());
    absl::StatusOr<std::vector<v1::JobEvent>> events =
        store->Events(request->job_id(), last_event, kStreamBatch);
    if (!events.ok()) return ToGrpc(events.status());
    for (v1::JobEvent& e : *events) {
      last_event = e.seq();
      v1::JobUpdate update;
      *update.mutable_event() = std::move(e);
      if (!writer->Write(update)) return grpc::Status::OK;
    }
    absl::StatusOr<std::vector<JobStore::MetricRow>> rows =
        store->Metrics(request->job_id(), INT64_MIN, last_row, kStreamBatch);
    if (!rows.ok()) return ToGrpc(rows.status());
    for (JobStore::MetricRow& row : *rows) {
      last_row = row.row;
      v1::JobUpdate update;
      *update.mutable_metrics() = std::move(row.point);
      if (!writer->Write(update)) return grpc::Status::OK;
    }
    const bool more = events->size() == kStreamBatch || rows->size() == kStreamBatch;
    if (Changed(sent, *now) && !more) {
      v1::JobUpdate update;
      *update.mutable_job() = *now;
      if (!writer->Write(update)) return grpc::Status::OK;
      sent = *std::move(now);
    }
    if (IsTerminal(sent.state()) && !more) break;
    if (!more) coordinator_->AwaitChange(version, absl::Seconds(1));
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::StreamLogs(grpc::ServerContext* context,
                                        const v1::StreamLogsRequest* request,
                                        grpc::ServerWriter<v1::LogChunk>* writer) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return ToGrpc(s);
  const int max_bytes = request->max_bytes() == 0 ? kDefaultLogChunkBytes : request->max_bytes();
  if (max_bytes < 0 || max_bytes > kMaxLogChunkBytes) {
    return ToGrpc(absl::InvalidArgumentError("max_bytes must be 1..1048576"));
  }
  absl::StatusOr<v1::Job> job = coordinator_->GetJob(request->job_id(), false);
  if (!job.ok()) return ToGrpc(job.status());
  const int workers = job->workers();
  std::vector<int> ranks;
  std::vector<int64_t> offsets;
  if (request->has_rank()) {
    if (request->rank() < 0 || request->rank() >= workers) {
      return ToGrpc(absl::InvalidArgumentError(absl::StrCat(
          "rank ", request->rank(), " is out of range (the job has ", workers, " ranks)")));
    }
    ranks = {request->rank()};
    offsets = {request->offset()};
  } else {
    if (request->rank_offsets_size() > workers) {
      return ToGrpc(absl::InvalidArgumentError("more rank_offsets than ranks"));
    }
    for (int r = 0; r < workers; ++r) {
      ranks.push_back(r);
      offsets.push_back(r < request->rank_offsets_size() ? request->rank_offsets(r) : 0);
    }
  }
  for (int64_t off : offsets) {
    if (off < 0) return ToGrpc(absl::InvalidArgumentError("offsets must be >= 0"));
  }
  StreamSlot slot(streams_);
  if (!slot.ok()) return ToGrpc(absl::ResourceExhaustedError("too many open streams"));
  const bool merged = !request->has_rank();
  while (!StreamOver(context)) {
    const uint64_t version = coordinator_->Version();
    const bool ended = IsTerminal(job->state());  // read before the files: nothing is missed
    bool wrote = false;
    for (size_t i = 0; i < ranks.size(); ++i) {
      absl::StatusOr<std::string> data =
          ReadLogChunk(RankLogPath(job->log_dir(), ranks[i]), offsets[i], max_bytes,
                       /*whole_lines=*/merged && !ended);
      if (!data.ok()) return ToGrpc(data.status());
      if (data->empty()) continue;
      v1::LogChunk chunk;
      chunk.set_rank(ranks[i]);
      chunk.set_offset(offsets[i]);
      offsets[i] += static_cast<int64_t>(data->size());
      chunk.set_data(*std::move(data));
      if (!writer->Write(chunk)) return grpc::Status::OK;
      wrote = true;
    }
    if (wrote) continue;
    if (!request->follow() || ended) break;
    coordinator_->AwaitChange(version, absl::Milliseconds(200));
    job = coordinator_->GetJob(request->job_id(), false);
    if (!job.ok()) return ToGrpc(job.status());
  }
  return grpc::Status::OK;
}

}  // namespace kiln::scheduler
