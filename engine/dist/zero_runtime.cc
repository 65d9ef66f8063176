// ZeroRuntime: bucketed reductions, gathers and their buffers.
#include "engine/dist/zero_runtime.h"

#include "absl/strings/str_cat.h"

namespace kiln::dist {

ZeroRuntime::ZeroRuntime(Communicator* comm, BucketLayout layout, DType dtype,
                         const ZeroOptions& options)
    : comm_(comm), layout_(std::move(layout)), dtype_(dtype), options_(options) {
  int64_t offset = 0;
  for (const Bucket& b : layout_.buckets) {
    shard_offset_.push_back(offset);
    offset += b.chunk;
  }
  ready_count_.assign(layout_.buckets.size(), 0);
  if (options_.stage >= 2) {
    grad_shard_ = Tensor::Zeros({offset}, dtype_, options_.device);
    for (int i = 0; i < options_.staging_buffers; ++i) {
      staging_.push_back(Tensor::Zeros({layout_.max_bucket}, dtype_, options_.device));
    }
    staging_work_.resize(staging_.size());
  }
  if (options_.stage >= 3) param_shard_ = Tensor::Zeros({offset}, dtype_, options_.device);
}

void ZeroRuntime::Record(const absl::Status& s) {
  if (!s.ok() && failure_.ok()) failure_ = s;
}

void ZeroRuntime::BeginMicroBatch(int micro) {
  micro_ = micro;
  std::fill(ready_count_.begin(), ready_count_.end(), 0);
  if (options_.stage >= 2 && micro > 0 && !recv_.defined()) {
    recv_ = Tensor::Zeros({grad_shard_.numel()}, dtype_, options_.device);
    const KernelFactory add = KernelRegistry::Global().Find("add", options_.device.type, dtype_);
    KILN_CHECK(add != nullptr) << "no add kernel on " << options_.device << " for " << dtype_;
    add_ = add();
  }
}

void ZeroRuntime::OnGradReady(int param, const Tensor& flat_grads) {
  const int b = layout_.bucket_of[param];
  const Bucket& bucket = layout_.buckets[b];
  if (++ready_count_[b] < static_cast<int>(bucket.params.size())) return;
  pending_.push_back(comm_->AllReduce(
      flat_grads.Slice(0, bucket.offset, bucket.offset + bucket.length), ReduceOp::kSum));
}

void ZeroRuntime::ReduceBucket(int bucket_index, const std::vector<int>& members,
                               const Tensor* grads) {
  const Bucket& b = layout_.buckets[bucket_index];
  const int count = static_cast<int>(members.size());
  const int s = next_staging_;
  next_staging_ = (next_staging_ + 1) % static_cast<int>(staging_.size());
  if (staging_work_[s] != nullptr) {
    Record(staging_work_[s]->Wait(options_.timeout));
    staging_work_[s] = nullptr;
  }
  const Tensor staging = staging_[s].Slice(0, 0, b.length);  // (world * chunk)
  staging.Fill(0.0f);  // padding and parameters without a gradient (on a GPU: a stream memset)
  for (int i = 0; i < count; ++i) {
    const int64_t at = layout_.param_offset[b.params[members[i]]] - b.offset;
    KILN_CHECK(grads[i].dtype() == dtype_ && grads[i].is_contiguous());
    KILN_CHECK(grads[i].device() == options_.device) << "gradient on " << grads[i].device();
    staging.Slice(0, at, at + grads[i].numel()).CopyFrom(grads[i].View({grads[i].numel()}));
  }
  const Tensor& target = micro_ == 0 ? grad_shard_ : recv_;
  const Tensor out = target.Slice(0, shard_offset_[bucket_index],
                                  shard_offset_[bucket_index] + b.chunk);  // (chunk)
  auto work = comm_->ReduceScatter(staging, out, ReduceOp::kSum);
  staging_work_[s] = work;
  pending_.push_back(work);
}

void ZeroRuntime::GatherStart(int id, int bucket_index, const Tensor& full) {
  const Bucket& b = layout_.buckets[bucket_index];
  KILN_CHECK_EQ(full.numel(), b.length);
  const Tensor mine =
      param_shard_.Slice(0, shard_offset_[bucket_index], shard_offset_[bucket_index] + b.chunk);
  gathers_[id] = comm_->AllGather(mine, full);
}

void ZeroRuntime::GatherWait(int id) {
  auto it = gathers_.find(id);
  KILN_CHECK(it != gathers_.end()) << "gather " << id << " was never started";
  Record(it->second->Wait(options_.timeout));
  gathers_.erase(it);
}

absl::Status ZeroRuntime::WaitAll(std::vector<std::shared_ptr<Work>>& works) {
  absl::Status first;
  for (auto& w : works) {
    const absl::Status s = w->Wait(options_.timeout);
    if (!s.ok() && first.ok()) first = s;
  }
  works.clear();
  return first;
}

absl::Status ZeroRuntime::FinishBackward() {
  Record(WaitAll(pending_));
  for (auto& w : staging_work_) w = nullptr;
  if (!failure_.ok()) return failure_;
  if (options_.stage >= 2 && micro_ > 0) {
    // grad_shard_ += recv_: f32 arithmetic rounded to the storage dtype (out may alias a).
    Tensor args[2] = {grad_shard_, recv_};
    Tensor out[1] = {grad_shard_};
    KernelContext ctx;
    ctx.inputs = args;
    ctx.num_inputs = 2;
    ctx.outputs = out;
    ctx.num_outputs = 1;
    add_->Run(ctx);
  }
  return absl::OkStatus();
}

absl::Status ZeroRuntime::GatherUpdatedParams(const Tensor& flat_params) {
  std::vector<std::shared_ptr<Work>> works;
  const int rank = comm_->rank();
  for (const Bucket& b : layout_.buckets) {
    const Tensor full = flat_params.Slice(0, b.offset, b.offset + b.length);
    const Tensor mine =
        flat_params.Slice(0, b.offset + rank * b.chunk, b.offset + (rank + 1) * b.chunk);
    works.push_back(comm_->AllGather(mine, full));
  }
  return WaitAll(works);
}

Tensor ZeroRuntime::OnCommDevice(const Tensor& host) const {
  KILN_CHECK(host.device().is_cpu() && host.is_contiguous());
  if (options_.device.is_cpu()) return host;
  Tensor t = Tensor::Zeros(host.sizes(), host.dtype(), options_.device);
  t.CopyFrom(host);
  return t;
}

absl::Status ZeroRuntime::AllReduceHost(const Tensor& host, ReduceOp op) {
  const Tensor t = OnCommDevice(host);
  KILN_RETURN_IF_ERROR(comm_->AllReduce(t, op)->Wait(options_.timeout));
  if (!options_.device.is_cpu()) host.CopyFrom(t);  // after the collective (Note [NCCL waits])
  return absl::OkStatus();
}

absl::Status ZeroRuntime::AllReduceSum(const Tensor& host) {
  return AllReduceHost(host, ReduceOp::kSum);
}

absl::Status ZeroRuntime::AllReduceMax(const Tensor& host) {
  return AllReduceHost(host, ReduceOp::kMax);
}

absl::Status ZeroRuntime::AllGatherHost(const Tensor& input, const Tensor& output) {
  const Tensor in = OnCommDevice(input), out = OnCommDevice(output);
  KILN_RETURN_IF_ERROR(comm_->AllGather(in, out)->Wait(options_.timeout));
  if (!options_.device.is_cpu()) output.CopyFrom(out);
  return absl::OkStatus();
}

int64_t ZeroRuntime::BufferBytes() const {
  int64_t n = 0;
  for (const Tensor& s : staging_) n += static_cast<int64_t>(s.nbytes());
  if (recv_.defined()) n += static_cast<int64_t>(recv_.nbytes());
  return n;
}

}  // namespace kiln::dist
