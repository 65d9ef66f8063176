// TrainingSession's data parallelism: communicator and ZeRO runtime set-up, the per-step agreement
// across ranks, gathering the full weights, and the per-rank memory report.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/dist/zero_pass.h"
#include "engine/train/session.h"

namespace kiln::train {

absl::Status TrainingSession::SetUpDistributed(graph::Graph& graph) {
  const int world = options_.world_size, rank = options_.rank;
  if (spec_.parallel().has_dp() && spec_.parallel().dp() != world) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.dp: ", spec_.parallel().dp(),
                                                   " but this run has ", world, " ranks"));
  }
  if (stage_ < 0 || stage_ > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.zero_stage: ", stage_, " is not one of 0, 1, 2, 3"));
  }
  dist::CommunicatorOptions co;
  co.timeout = absl::Seconds(options_.collective_timeout_s);
  co.cuda_device = device_.is_cuda() ? device_.index : -1;
  if (options_.communicator != nullptr) {
    comm_ = options_.communicator;
  } else {
    dist::Store* store = options_.store;
    std::string backend = options_.dist_backend;
    if (backend.empty()) backend = device_.is_cuda() ? "nccl" : "gloo";
    if (world == 1) {  // ZeRO on one rank: a one-rank group in this process
      owned_store_ = std::make_unique<dist::InProcessStore>();
      store = owned_store_.get();
      backend = device_.is_cuda() ? "nccl" : "inprocess";
    }
    if (device_.is_cuda() != (backend == "nccl")) {
      return absl::InvalidArgumentError(
          absl::StrCat("the ", backend, " communicator cannot move tensors on ", device_.ToString(),
                       device_.is_cuda() ? " (use nccl)" : " (use gloo)"));
    }
    if (store == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", rank, " of ", world,
                       " has no rendezvous store (run through kilnd, or "
                       "kiln-train --nproc)"));
    }
    KILN_ASSIGN_OR_RETURN(owned_comm_, dist::MakeCommunicator(backend, store, rank, world, co));
    comm_ = owned_comm_.get();
  }
  std::vector<dist::ParamInfo> infos;
  for (graph::ValueId p : graph.params()) {
    infos.push_back({graph.value(p).name, graph.value(p).type.numel()});
  }
  const double bucket_mb = spec_.parallel().has_bucket_mb() ? spec_.parallel().bucket_mb() : 25.0;
  const int64_t elem = static_cast<int64_t>(DTypeSize(compute_));
  const int64_t bucket_elements =
      std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20)) / elem);
  dist::BucketLayout layout =
      dist::MakeBucketLayout(infos, world, bucket_elements, 64 / elem, stage_ == 3);
  dist::ZeroOptions zo;
  zo.stage = stage_;
  zo.device = device_;
  zo.timeout = co.timeout;
  zero_ = std::make_shared<dist::ZeroRuntime>(comm_, layout, compute_, zo);
  KILN_RETURN_IF_ERROR(dist::ApplyZeroPass(graph, zero_));
  planner_.param_offsets = layout.param_offset;
  planner_.param_elements = layout.elements;
  planner_.external_params = stage_ == 3;
  return absl::OkStatus();
}

absl::Status TrainingSession::ReduceAcrossRanks(StepMetrics& m, bool& finite,
                                                double& squared_norm) {
  const int world = options_.world_size;
  const Tensor v = Tensor::FromFloats({static_cast<float>(m.loss), finite ? 0.0f : 1.0f}, {2});
  KILN_RETURN_IF_ERROR(zero_->AllReduceSum(v));
  m.loss = v.ToFloats()[0] / world;
  finite = v.ToFloats()[1] == 0.0f;
  if (stage_ >= 2) {
    // Note [Exact norms across shards]: each rank's squared norm travels as the bits of a double
    // and every rank adds them in rank order, so the total is the same on every rank and, on one
    // rank, equal to the unsharded computation.
    double mine = finite ? squared_norm : 0.0;
    int64_t bits;
    std::memcpy(&bits, &mine, sizeof(bits));
    const Tensor all = Tensor::Zeros({world}, DType::kI64);
    KILN_RETURN_IF_ERROR(
        zero_->AllGatherHost(Tensor::FromVector(std::vector<int64_t>{bits}, {1}), all));
    squared_norm = 0;
    for (int r = 0; r < world; ++r) {
      double part;
      std::memcpy(&part, all.data<int64_t>() + r, sizeof(part));
      squared_norm += part;
    }
    if (!finite) squared_norm = INFINITY;
  }
  return absl::OkStatus();
}

absl::Status TrainingSession::GatherFullWeights(const Tensor& full) const {
  if (!shard_->master_concat().defined()) {  // f32, ZeRO 1/2: the model's buffer is complete
    full.CopyFrom(exec_->flat_params());
    return absl::OkStatus();
  }
  const Tensor& master = shard_->master_concat();  // (shard elements) f32, on the device
  // The gather lands on the communicator's device; `full` is host memory.
  const Tensor gathered =
      master.device().is_cpu() ? full : Tensor::Zeros(full.sizes(), DType::kF32, master.device());
  std::vector<std::shared_ptr<dist::Work>> works;
  const dist::BucketLayout& layout = zero_->layout();
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    const dist::Bucket& bucket = layout.buckets[b];
    const int64_t at = zero_->shard_offset(static_cast<int>(b));
    works.push_back(
        comm_->AllGather(master.Slice(0, at, at + bucket.chunk),
                         gathered.Slice(0, bucket.offset, bucket.offset + bucket.length)));
  }
  absl::Status first;
  for (auto& w : works) {
    const absl::Status s = w->Wait(absl::Seconds(options_.collective_timeout_s));
    if (!s.ok() && first.ok()) first = s;
  }
  if (first.ok() && !master.device().is_cpu()) full.CopyFrom(gathered);
  return first;
}

TrainingSession::MemoryReport TrainingSession::Memory() const {
  const graph::MemoryPlan& plan = exec_->memory_plan();
  MemoryReport r;
  r.parameters = stage_ >= 3 ? static_cast<int64_t>(zero_->param_shard().nbytes())
                             : static_cast<int64_t>(plan.params_bytes);
  r.gradients = stage_ >= 2 ? static_cast<int64_t>(zero_->grad_shard().nbytes())
                            : static_cast<int64_t>(plan.grads_bytes);
  r.optimizer = shard_->Bytes();
  r.buffers = zero_ ? zero_->BufferBytes() : 0;
  r.activations = static_cast<int64_t>(plan.arena_bytes);
  for (int64_t n : plan.param_numel) r.num_params += n;
  return r;
}

}  // namespace kiln::train
