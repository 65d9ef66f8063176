// ZeroRuntime: bucketed reductions, gathers and their buffers.
#include "engine/dist/zero_runtime.h"

#include <cstring>

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
    grad_shard_ = Tensor::Zeros({offset}, dtype_);
    for (int i = 0; i < options_.staging_buffers; ++i) {
      staging_.push_back(Tensor::Zeros({layout_.max_bucket}, dtype_));
    }
    staging_work_.resize(staging_.size());
  }
  if (options_.stage >= 3) param_shard_ = Tensor::Zeros({offset}, dtype_);
}

void ZeroRuntime::Record(const absl::Status& s) {
  if (!s.ok() && failure_.ok()) failure_ = s;
}

void ZeroRuntime::BeginMicroBatch(int micro) {
  micro_ = micro;
  std::fill(ready_count_.begin(), ready_count_.end(), 0);
  if (options_.stage >= 2 && micro > 0 && !recv_.defined()) {
    recv_ = Tensor::Zeros({grad_shard_.numel()}, dtype_);
  }
}

void ZeroRuntime::OnGradReady(int param, const Tensor& flat_grads) {
  const int b = layout_.bucket_of[param];
  const Bucket& bucket = layout_.buckets[b];
  if (++ready_count_[b] < static_cast<int>(bucket.params.size())) return;
  pending_.push_back(comm_->AllReduce(flat_grads.Slice(0, bucket.offset, bucket.offset + bucket.length),
                                      ReduceOp::kSum));
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
  const size_t elem = DTypeSize(dtype_);
  std::memset(staging.raw_data(), 0, b.length * elem);
  for (int i = 0; i < count; ++i) {
    const int64_t at = layout_.param_offset[b.params[members[i]]] - b.offset;
    KILN_CHECK(grads[i].dtype() == dtype_ && grads[i].is_contiguous());
    std::memcpy(static_cast<char*>(staging.raw_data()) + at * elem, grads[i].raw_data(),
                grads[i].nbytes());
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
  const Tensor mine = param_shard_.Slice(0, shard_offset_[bucket_index],
                                         shard_offset_[bucket_index] + b.chunk);
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

namespace {

// a += b, element-wise in f32, rounded to the storage dtype.
void AddInto(const Tensor& a, const Tensor& b) {
  DispatchFloating(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* x = a.data<T>();
    const T* y = b.data<T>();
    for (int64_t i = 0; i < a.numel(); ++i) {
      x[i] = T(static_cast<float>(x[i]) + static_cast<float>(y[i]));
    }
  });
}

}  // namespace

absl::Status ZeroRuntime::FinishBackward() {
  Record(WaitAll(pending_));
  for (auto& w : staging_work_) w = nullptr;
  if (!failure_.ok()) return failure_;
  if (options_.stage >= 2 && micro_ > 0) AddInto(grad_shard_, recv_);
  return absl::OkStatus();
}

absl::Status ZeroRuntime::GatherUpdatedParams(const Tensor& flat_params) {
  std::vector<std::shared_ptr<Work>> works;
  const int rank = comm_->rank();
  for (const Bucket& b : layout_.buckets) {
    const Tensor full = flat_params.Slice(0, b.offset, b.offset + b.length);
    const Tensor mine = flat_params.Slice(0, b.offset + rank * b.chunk,
                                          b.offset + (rank + 1) * b.chunk);
    works.push_back(comm_->AllGather(mine, full));
  }
  return WaitAll(works);
}

absl::Status ZeroRuntime::AllReduceSum(const Tensor& t) {
  return comm_->AllReduce(t, ReduceOp::kSum)->Wait(options_.timeout);
}

absl::Status ZeroRuntime::AllReduceMax(const Tensor& t) {
  return comm_->AllReduce(t, ReduceOp::kMax)->Wait(options_.timeout);
}

int64_t ZeroRuntime::BufferBytes() const {
  int64_t n = 0;
  for (const Tensor& s : staging_) n += static_cast<int64_t>(s.nbytes());
  if (recv_.defined()) n += static_cast<int64_t>(recv_.nbytes());
  return n;
}

}  // namespace kiln::dist
