// Communicator: argument checks, the issue-ordered communication thread, the completion thread
// for point-to-point transfers, failure poisoning, and the backend factory.
#include "engine/dist/communicator.h"

#include "absl/strings/str_cat.h"
#include "engine/dist/gloo_backend.h"
#include "engine/dist/inprocess_backend.h"
#include "engine/dist/nccl_backend.h"

namespace kiln::dist {
namespace {

// DTypeName is a std::string_view, which absl::StrCat of this abseil does not take.
std::string Name(DType dtype) { return std::string(DTypeName(dtype)); }

absl::Status CheckTensor(const Tensor& t, absl::string_view name, DeviceType device) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (t.device().type != device) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is on ", t.device().ToString(), "; this backend moves ",
                     device == DeviceType::kCPU ? "CPU" : "CUDA", " tensors"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " ", t.TypeString(), " is not contiguous"));
  }
  return absl::OkStatus();
}

absl::Status CheckReducible(const Tensor& t, ReduceOp op) {
  if (!IsReducibleDType(t.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reduce ", Name(t.dtype()), " (f32, bf16, f16, i32, i64 only)"));
  }
  if (op == ReduceOp::kAvg && !IsFloating(t.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("avg needs a floating dtype, got ", Name(t.dtype())));
  }
  return absl::OkStatus();
}

absl::Status CheckSameDType(const Tensor& a, const Tensor& b) {
  if (a.dtype() == b.dtype()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("input is ", Name(a.dtype()), " but output is ", Name(b.dtype())));
}

absl::Status CheckPeer(int peer, int rank, int world, absl::string_view what) {
  if (peer < 0 || peer >= world) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", peer, " is not a rank of ", world));
  }
  if (peer == rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", peer, " is this rank"));
  }
  return absl::OkStatus();
}

// Runs the checks in order and returns the first failure.
absl::Status FirstError(std::initializer_list<std::function<absl::Status()>> checks) {
  for (const auto& check : checks) {
    absl::Status status = check();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Work::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(description_, ": not completed after waiting ",
                                                    absl::FormatDuration(timeout)));
  }
  return status_;
}

bool Work::IsCompleted() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

void Work::Complete(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (done_) return;
  done_ = true;
  status_ = std::move(status);
}

Communicator::Communicator(std::unique_ptr<Backend> backend, std::string backend_name, int rank,
                           int world, CommunicatorOptions options)
    : backend_(std::move(backend)),
      backend_name_(std::move(backend_name)),
      rank_(rank),
      world_(world),
      options_(std::move(options)) {
  ops_thread_ = std::thread([this] { RunOps(); });
  completion_thread_ = std::thread([this] { RunCompletions(); });
}

Communicator::~Communicator() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  ops_thread_.join();
  completion_thread_.join();
}

std::shared_ptr<Work> Communicator::Enqueue(Kind kind, absl::string_view name,
                                            absl::string_view detail, const absl::Status& valid,
                                            RunFn run) {
  // On the issuing thread, before anything else can be issued after it.
  Backend::IssueMark mark = valid.ok() ? backend_->MarkIssue() : nullptr;
  absl::MutexLock lock(&mu_);
  const uint64_t seq = kind == Kind::kCollective ? next_collective_++ : next_p2p_++;
  auto work =
      std::make_shared<Work>(absl::StrCat(name, " #", seq, " on rank ", rank_, " of ", world_, " (",
                                          backend_name_, detail.empty() ? "" : ", ", detail, ")"));
  if (!valid.ok()) {
    work->Complete(
        absl::InvalidArgumentError(absl::StrCat(work->description(), ": ", valid.message())));
    return work;
  }
  Op op;
  op.work = work;
  op.seq = seq;
  op.run = std::move(run);
  op.mark = std::move(mark);
  queue_.push_back(std::move(op));
  return work;
}

absl::Status Communicator::CheckArg(const Tensor& t, absl::string_view name) const {
  return CheckTensor(t, name, backend_->device_type());
}

std::shared_ptr<Work> Communicator::IssueCollective(
    absl::string_view name, absl::string_view detail, const absl::Status& valid,
    std::function<absl::Status(uint64_t, absl::Time)> run) {
  return Enqueue(Kind::kCollective, name, detail, valid,
                 [run = std::move(run)](
                     uint64_t seq, absl::Time deadline) -> absl::StatusOr<Backend::Completion> {
                   absl::Status status = run(seq, deadline);
                   if (!status.ok()) return status;
                   return Backend::Completion();
                 });
}

std::shared_ptr<Work> Communicator::AllReduce(const Tensor& tensor, ReduceOp op) {
  const absl::Status valid = FirstError(
      {[&] { return CheckArg(tensor, "tensor"); }, [&] { return CheckReducible(tensor, op); }});
  const std::string detail =
      tensor.defined() ? absl::StrCat(tensor.TypeString(), ", ", ReduceOpName(op)) : "";
  return IssueCollective(
      "AllReduce", detail, valid, [this, tensor, op](uint64_t seq, absl::Time deadline) {
        const bool divide = op == ReduceOp::kAvg && !backend_->NativeAverage();
        const ReduceOp wire = divide ? ReduceOp::kSum : op;
        absl::Status status = backend_->AllReduce(tensor, wire, seq, deadline);
        if (status.ok() && divide) {
          DivideInPlace(tensor.dtype(), tensor.raw_data(), tensor.numel(), world_);
        }
        return status;
      });
}

std::shared_ptr<Work> Communicator::ReduceScatter(const Tensor& input, const Tensor& output,
                                                  ReduceOp op) {
  const absl::Status valid = FirstError(
      {[&] { return CheckArg(input, "input"); }, [&] { return CheckArg(output, "output"); },
       [&] { return CheckSameDType(input, output); }, [&] { return CheckReducible(input, op); },
       [&]() -> absl::Status {
         if (input.numel() == world_ * output.numel()) return absl::OkStatus();
         return absl::InvalidArgumentError(
             absl::StrCat("input ", input.TypeString(), " must hold world_size (", world_,
                          ") times the elements of output ", output.TypeString(),
                          "; pad it (Note [Chunked collectives and padding])"));
       }});
  const std::string detail =
      input.defined() ? absl::StrCat(input.TypeString(), ", ", ReduceOpName(op)) : "";
  return IssueCollective(
      "ReduceScatter", detail, valid, [this, input, output, op](uint64_t seq, absl::Time deadline) {
        const bool divide = op == ReduceOp::kAvg && !backend_->NativeAverage();
        const ReduceOp wire = divide ? ReduceOp::kSum : op;
        absl::Status status = backend_->ReduceScatter(input, output, wire, seq, deadline);
        if (status.ok() && divide) {
          DivideInPlace(output.dtype(), output.raw_data(), output.numel(), world_);
        }
        return status;
      });
}

std::shared_ptr<Work> Communicator::AllGather(const Tensor& input, const Tensor& output) {
  const absl::Status valid = FirstError(
      {[&] { return CheckArg(input, "input"); }, [&] { return CheckArg(output, "output"); },
       [&] { return CheckSameDType(input, output); },
       [&]() -> absl::Status {
         if (output.numel() == world_ * input.numel()) return absl::OkStatus();
         return absl::InvalidArgumentError(
             absl::StrCat("output ", output.TypeString(), " must hold world_size (", world_,
                          ") times the elements of input ", input.TypeString()));
       }});
  const std::string detail = input.defined() ? input.TypeString() : "";
  return IssueCollective("AllGather", detail, valid,
                         [this, input, output](uint64_t seq, absl::Time deadline) {
                           return backend_->AllGather(input, output, seq, deadline);
                         });
}

std::shared_ptr<Work> Communicator::Broadcast(const Tensor& tensor, int root) {
  const absl::Status valid = FirstError({[&] { return CheckArg(tensor, "tensor"); },
                                         [&]() -> absl::Status {
                                           if (root >= 0 && root < world_) return absl::OkStatus();
                                           return absl::InvalidArgumentError(absl::StrCat(
                                               "root ", root, " is not a rank of ", world_));
                                         }});
  const std::string detail =
      tensor.defined() ? absl::StrCat(tensor.TypeString(), ", root ", root) : "";
  return IssueCollective("Broadcast", detail, valid,
                         [this, tensor, root](uint64_t seq, absl::Time deadline) {
                           return backend_->Broadcast(tensor, root, seq, deadline);
                         });
}

std::shared_ptr<Work> Communicator::AllToAll(const Tensor& input, const Tensor& output) {
  const absl::Status valid = FirstError(
      {[&] { return CheckArg(input, "input"); }, [&] { return CheckArg(output, "output"); },
       [&] { return CheckSameDType(input, output); },
       [&]() -> absl::Status {
         if (input.numel() == output.numel() && input.numel() % world_ == 0) {
           return absl::OkStatus();
         }
         return absl::InvalidArgumentError(
             absl::StrCat("input ", input.TypeString(), " and output ", output.TypeString(),
                          " must have the same size, a multiple of world_size ", world_));
       }});
  const std::string detail = input.defined() ? input.TypeString() : "";
  return IssueCollective("AllToAll", detail, valid,
                         [this, input, output](uint64_t seq, absl::Time deadline) {
                           return backend_->AllToAll(input, output, seq, deadline);
                         });
}

std::shared_ptr<Work> Communicator::Barrier() {
  return IssueCollective(
      "Barrier", "", absl::OkStatus(),
      [this](uint64_t seq, absl::Time deadline) { return backend_->Barrier(seq, deadline); });
}

std::shared_ptr<Work> Communicator::Send(const Tensor& tensor, int dst, int tag) {
  const absl::Status valid =
      FirstError({[&] { return CheckArg(tensor, "tensor"); },
                  [&] { return CheckPeer(dst, rank_, world_, "destination"); },
                  [&]() -> absl::Status {
                    return tag >= 0 ? absl::OkStatus() : absl::InvalidArgumentError("negative tag");
                  }});
  const std::string detail =
      absl::StrCat(tensor.defined() ? tensor.TypeString() : "", " to rank ", dst, ", tag ", tag);
  return Enqueue(Kind::kPointToPoint, "Send", detail, valid,
                 [this, tensor, dst, tag](uint64_t, absl::Time) {
                   return backend_->PostSend(tensor, dst, tag);
                 });
}

std::shared_ptr<Work> Communicator::Recv(const Tensor& tensor, int src, int tag) {
  const absl::Status valid =
      FirstError({[&] { return CheckArg(tensor, "tensor"); },
                  [&] { return CheckPeer(src, rank_, world_, "source"); },
                  [&]() -> absl::Status {
                    return tag >= 0 ? absl::OkStatus() : absl::InvalidArgumentError("negative tag");
                  }});
  const std::string detail =
      absl::StrCat(tensor.defined() ? tensor.TypeString() : "", " from rank ", src, ", tag ", tag);
  return Enqueue(Kind::kPointToPoint, "Recv", detail, valid,
                 [this, tensor, src, tag](uint64_t, absl::Time) {
                   return backend_->PostRecv(tensor, src, tag);
                 });
}

void Communicator::Fail(Op& op, const absl::Status& cause) {
  const absl::Status status(cause.code(),
                            absl::StrCat(op.work->description(), " failed: ", cause.message()));
  bool first = false;
  {
    absl::MutexLock lock(&mu_);
    if (poison_.ok()) {
      poison_ = status;
      first = true;
    }
  }
  if (first) backend_->Abort();
  op.work->Complete(status);
}

void Communicator::RunOps() {
  for (;;) {
    Op op;
    absl::Status poison;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) break;  // stopping, and every issued op has run
      op = std::move(queue_.front());
      queue_.pop_front();
      poison = poison_;
    }
    if (!poison.ok()) {
      op.work->Complete(absl::Status(
          poison.code(),
          absl::StrCat(op.work->description(),
                       " was not run: this communicator failed earlier: ", poison.message())));
      continue;
    }
    op.deadline = absl::Now() + options_.timeout;
    absl::StatusOr<Backend::Completion> posted;
    try {
      backend_->BeginOp(op.mark);
      posted = op.run(op.seq, op.deadline);
    } catch (const std::exception& e) {  // backends should not throw; never lose an op to it
      posted = absl::InternalError(absl::StrCat("uncaught exception: ", e.what()));
    }
    if (!posted.ok()) {
      Fail(op, posted.status());
    } else if (!*posted) {
      op.work->Complete(absl::OkStatus());
    } else {
      op.completion = std::move(*posted);
      absl::MutexLock lock(&mu_);
      completions_.push_back(std::move(op));
    }
  }
  absl::MutexLock lock(&mu_);
  ops_done_ = true;
}

void Communicator::RunCompletions() {
  for (;;) {
    Op op;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !completions_.empty() || ops_done_;
      };
      mu_.Await(absl::Condition(&ready));
      if (completions_.empty()) break;
      op = std::move(completions_.front());
      completions_.pop_front();
    }
    absl::Status status;
    try {
      status = op.completion(op.deadline);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("uncaught exception: ", e.what()));
    }
    if (status.ok()) {
      op.work->Complete(absl::OkStatus());
    } else {
      Fail(op, status);
    }
  }
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(absl::string_view backend,
                                                               Store* store, int rank, int world,
                                                               const CommunicatorOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("MakeCommunicator needs a store");
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of world ", world));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the communicator timeout must be positive");
  }
  // Note [Communicator key spaces]
  // The n-th communicator a rank creates uses keys under "comm/<n>/". Each rank counts on its own
  // key, so numbering needs no agreement beyond creating communicators in the same order.
  absl::StatusOr<int64_t> instance = store->Add(absl::StrCat("comm/count/rank_", rank), 1);
  if (!instance.ok()) return instance.status();
  PrefixStore scoped(store, absl::StrCat("comm/", *instance, "/"));

  absl::StatusOr<std::unique_ptr<Backend>> made;
  if (backend == "gloo") {
    made = MakeGlooBackend(&scoped, rank, world, options);
  } else if (backend == "inprocess") {
    made = MakeInProcessBackend(&scoped, rank, world, options);
  } else if (backend == "nccl") {
    made = MakeNcclBackend(&scoped, rank, world, options);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown communicator backend '", backend,
                                                   "' (known: gloo, inprocess, nccl)"));
  }
  if (!made.ok()) {
    return absl::Status(made.status().code(),
                        absl::StrCat("creating the ", backend, " communicator for rank ", rank,
                                     " of ", world, ": ", made.status().message()));
  }
  return std::make_unique<Communicator>(std::move(*made), std::string(backend), rank, world,
                                        options);
}

}  // namespace kiln::dist
