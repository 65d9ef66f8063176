// The data-parallel runtime of one rank: gradient reduction bucket by bucket as backward finishes
// (all-reduce for ZeRO 0/1, reduce-scatter into this rank's chunks for ZeRO 2/3), parameter
// all-gathers (after the optimizer for ZeRO 1/2; before each layer's use for ZeRO 3), and the
// buffers these need. The executor reaches it through the grad-ready callback (ZeRO 0/1) and
// through the zero_* graph ops (ZeRO 2/3; zero_ops.cc), all on the training thread; the transfers
// run on the communicator's thread. See Note [Overlap] and Note [ZeRO on a GPU].
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/kernel.h"
#include "engine/core/tensor.h"
#include "engine/dist/bucket_layout.h"
#include "engine/dist/communicator.h"

namespace kiln::dist {

// Note [Overlap]
// A bucket's reduction is issued the moment its last gradient is final, so it runs on the
// communication thread while backward computes earlier layers; FinishBackward waits for what is
// still in flight. ZeRO-2/3 copy a finished bucket into one of a few staging buffers (the copy
// frees the gradients' arena memory at once); a staging buffer is reused only after its previous
// reduce-scatter completed. ZeRO-3 gathers are split into start and wait nodes placed one bucket
// ahead of use, so the next layer's weights arrive while this one computes.

// Note [ZeRO on a GPU]
// With the NCCL communicator every buffer here lives on the rank's GPU (ZeroOptions::device) and
// the runtime never touches device memory from the host: staging buffers are cleared and filled by
// copies on the compute stream, later micro-batches are added by the registered "add" kernel, and
// the NCCL backend orders each collective after the compute stream's work and the compute stream
// after the collective (Note [NCCL waits]). The small agreements of a step (loss, finiteness,
// norms, checkpoint flags) are host values: the *Host collectives stage them through the device.

struct ZeroOptions {
  int stage = 0;
  Device device = Device::CPU();  // where the buffers live: the communicator's tensors' device
  int staging_buffers = 2;
  absl::Duration timeout = absl::Seconds(300);
};

class ZeroRuntime {
 public:
  ZeroRuntime(Communicator* comm, BucketLayout layout, DType dtype, const ZeroOptions& options);

  int stage() const { return options_.stage; }
  const BucketLayout& layout() const { return layout_; }
  Communicator* comm() const { return comm_; }
  DType dtype() const { return dtype_; }
  // ZeRO 3: this rank's parameter chunks, bucket after bucket: (ShardElements) in `dtype`.
  const Tensor& param_shard() const { return param_shard_; }
  // ZeRO 2/3: this rank's chunks of the summed gradients, bucket after bucket.
  const Tensor& grad_shard() const { return grad_shard_; }
  // Element offset of bucket b's chunk in the shard tensors.
  int64_t shard_offset(int bucket) const { return shard_offset_[bucket]; }

  // Call before each micro-batch's run (0-based); gradients of micro-batches after the first are
  // added to the first's (ZeRO 2/3) — ZeRO 0/1 reduce only on the last micro-batch.
  void BeginMicroBatch(int micro);
  // ZeRO 0/1: the executor's grad-ready callback.
  void OnGradReady(int param, const Tensor& flat_grads);
  // ZeRO 2/3: reduce bucket b; grads[i] is the gradient of its members[i]-th parameter (parameters
  // without a gradient contribute zeros).
  void ReduceBucket(int bucket, const std::vector<int>& members, const Tensor* grads);
  // ZeRO 3: gather bucket b's parameters into `full` (b.length elements); `id` names the gather.
  void GatherStart(int id, int bucket, const Tensor& full);
  void GatherWait(int id);
  // Waits for every reduction in flight; ZeRO 2/3 then fold later micro-batches into the shard.
  absl::Status FinishBackward();
  // ZeRO 1/2: after the optimizer updated this rank's chunks of `flat_params`, gather the rest.
  absl::Status GatherUpdatedParams(const Tensor& flat_params);
  // Synchronous reductions over ranks of a small host tensor (losses, norms, flags).
  absl::Status AllReduceSum(const Tensor& host);
  absl::Status AllReduceMax(const Tensor& host);
  // Synchronous all-gather of small host tensors: input (k), output (world * k).
  absl::Status AllGatherHost(const Tensor& input, const Tensor& output);
  // Bytes of communication buffers this runtime holds (staging and receive buffers).
  int64_t BufferBytes() const;
  // The first error of a kernel-driven collective (kernels cannot return a Status).
  const absl::Status& failure() const { return failure_; }

 private:
  void Record(const absl::Status& s);
  absl::Status AllReduceHost(const Tensor& host, ReduceOp op);
  // `host` itself when the communicator moves host tensors, else a copy on options_.device.
  Tensor OnCommDevice(const Tensor& host) const;
  absl::Status WaitAll(std::vector<std::shared_ptr<Work>>& works);

  Communicator* comm_;
  BucketLayout layout_;
  DType dtype_;
  ZeroOptions options_;
  std::vector<int64_t> shard_offset_;
  Tensor param_shard_, grad_shard_, recv_;
  std::unique_ptr<Kernel> add_;  // grad_shard_ += recv_ (ZeRO 2/3 with gradient accumulation)
  std::vector<Tensor> staging_;
  std::vector<std::shared_ptr<Work>> staging_work_;
  int next_staging_ = 0;
  int micro_ = 0;
  std::vector<int> ready_count_;  // ZeRO 0/1, per bucket, this micro-batch
  std::vector<std::shared_ptr<Work>> pending_;
  std::map<int, std::shared_ptr<Work>> gathers_;
  absl::Status failure_;
};

}  // namespace kiln::dist
