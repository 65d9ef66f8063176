// InProcessBackend and its Hub: collectives as a two-phase exchange of staged copies between the
// rank threads, point-to-point as a mailbox matched by (source, destination, tag).
#include "engine/dist/inprocess_backend.h"

#include <unistd.h>

#include <cstring>
#include <deque>
#include <map>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kiln::dist {
namespace {

// Note [Hub exchange]
// A collective is one round of the hub, keyed by its sequence number. Each rank stages a private
// copy of its input (so that outputs may alias inputs), deposits a pointer to it and waits until
// every rank has; then each rank computes its own output from all contributions, in rank order,
// and waits until every rank has finished reading before it frees its copy. A rank that times out
// before everyone arrived marks the hub failed, so that a late rank can never read a freed copy
// and every peer fails fast instead of waiting out its own timeout. After everyone arrived no rank
// blocks on anything but the others' bounded local work, so the second wait needs no deadline.
class Hub {
 public:
  using Consume = std::function<void(const std::vector<const void*>& contributions)>;

  explicit Hub(int world) : world_(world) {}

  absl::Status Exchange(int rank, uint64_t seq, const std::string& signature,
                        const void* contribution, const Consume& consume, absl::Time deadline) {
    std::vector<const void*> contributions;
    {
      absl::MutexLock lock(&mu_);
      if (!failed_.ok()) return failed_;
      Round& round = rounds_[seq];
      if (round.present.empty()) {
        round.signature = signature;
        round.first_rank = rank;
        round.present.assign(world_, false);
        round.contributions.assign(world_, nullptr);
      } else if (round.signature != signature) {
        failed_ = absl::FailedPreconditionError(
            absl::StrCat("collective mismatch: rank ", round.first_rank, " issued ",
                         round.signature, " but rank ", rank, " issued ", signature));
        return failed_;
      }
      round.present[rank] = true;
      round.contributions[rank] = contribution;
      ++round.arrived;
      auto all_here = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return round.arrived == world_ || !failed_.ok();
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&all_here), deadline)) {
        std::vector<int> missing;
        for (int r = 0; r < world_; ++r) {
          if (!round.present[r]) missing.push_back(r);
        }
        failed_ = absl::DeadlineExceededError(absl::StrCat(
            "rank(s) ", absl::StrJoin(missing, ", "), " did not join ", signature, " in time"));
        return failed_;
      }
      if (round.arrived != world_) return failed_;
      contributions = round.contributions;
    }
    consume(contributions);
    absl::MutexLock lock(&mu_);
    Round& round = rounds_[seq];
    ++round.departed;
    auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return round.departed == world_; };
    mu_.Await(absl::Condition(&all_done));
    if (++round.released == world_) rounds_.erase(seq);
    return absl::OkStatus();
  }

  struct PendingRecv {
    Tensor destination;
    bool done = false;
    absl::Status status;
  };
  using Key = std::tuple<int, int, int>;  // (source, destination, tag)

  // Buffered send: the data is copied (into a posted receive or the mailbox) before returning.
  absl::Status Send(int src, int dst, int tag, const Tensor& tensor) {
    absl::MutexLock lock(&mu_);
    if (!failed_.ok()) return failed_;
    const Key key(src, dst, tag);
    auto posted = recvs_.find(key);
    if (posted != recvs_.end() && !posted->second.empty()) {
      std::shared_ptr<PendingRecv> recv = posted->second.front();
      posted->second.pop_front();
      Deliver(*recv, static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
      return absl::OkStatus();
    }
    messages_[key].emplace_back(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
    return absl::OkStatus();
  }

  std::shared_ptr<PendingRecv> PostRecv(int src, int dst, int tag, const Tensor& tensor) {
    auto recv = std::make_shared<PendingRecv>();
    recv->destination = tensor;
    absl::MutexLock lock(&mu_);
    const Key key(src, dst, tag);
    auto queued = messages_.find(key);
    if (queued != messages_.end() && !queued->second.empty()) {
      Deliver(*recv, queued->second.front().data(), queued->second.front().size());
      queued->second.pop_front();
    } else {
      recvs_[key].push_back(recv);
    }
    return recv;
  }

  absl::Status WaitRecv(const std::shared_ptr<PendingRecv>& recv, int src, int dst, int tag,
                        absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return recv->done || !failed_.ok(); };
    const bool woke = mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    if (recv->done) return recv->status;
    // Withdraw the receive so that a later send cannot write into a tensor nobody waits for.
    std::deque<std::shared_ptr<PendingRecv>>& queue = recvs_[Key(src, dst, tag)];
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if (*it == recv) {
        queue.erase(it);
        break;
      }
    }
    if (woke) return failed_;
    return absl::DeadlineExceededError(
        absl::StrCat("no message from rank ", src, " with tag ", tag, " arrived in time"));
  }

  void Abort(int rank) {
    absl::MutexLock lock(&mu_);
    if (failed_.ok()) {
      failed_ = absl::AbortedError(absl::StrCat("rank ", rank, " of the group failed"));
    }
  }

 private:
  struct Round {
    std::string signature;
    int first_rank = 0;
    std::vector<bool> present;
    std::vector<const void*> contributions;
    int arrived = 0;
    int departed = 0;
    int released = 0;
  };

  static void Deliver(PendingRecv& recv, const char* data, size_t nbytes) {
    recv.done = true;
    if (nbytes != recv.destination.nbytes()) {
      recv.status = absl::InvalidArgumentError(absl::StrCat(
          "message of ", nbytes, " bytes for a receive of ", recv.destination.nbytes(), " bytes"));
      return;
    }
    if (nbytes > 0) std::memcpy(recv.destination.raw_data(), data, nbytes);
  }

  const int world_;
  absl::Mutex mu_;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::map<Key, std::deque<std::string>> messages_ ABSL_GUARDED_BY(mu_);
  std::map<Key, std::deque<std::shared_ptr<PendingRecv>>> recvs_ ABSL_GUARDED_BY(mu_);
};

// The process-wide registry through which ranks 1.. find the hub rank 0 created.
struct Registry {
  absl::Mutex mu;
  uint64_t next_id = 0;
  std::map<uint64_t, std::weak_ptr<Hub>> hubs;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

// A copy of `t` that this rank contributes (the staging of Note [Hub exchange]).
Tensor Stage(const Tensor& t) { return t.Clone(); }

void CopyBytes(void* dst, const void* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n);
}

// The sequence number of the join round that MakeInProcessBackend runs.
constexpr uint64_t kJoinSeq = ~uint64_t{0};

class InProcessBackend : public Backend {
 public:
  InProcessBackend(std::shared_ptr<Hub> hub, int rank, int world)
      : hub_(std::move(hub)), rank_(rank), world_(world) {}

  // Reduction order: ((x[0] + x[1]) + x[2]) + ... in rank order, one rounding per step for
  // 16-bit types (Note [16-bit reduction]); every rank computes the same bits.
  absl::Status AllReduce(const Tensor& tensor, ReduceOp op, uint64_t seq,
                         absl::Time deadline) override {
    const Tensor staged = Stage(tensor);
    return hub_->Exchange(
        rank_, seq, absl::StrCat("AllReduce ", tensor.TypeString(), " ", ReduceOpName(op)),
        staged.raw_data(),
        [&](const std::vector<const void*>& in) {
          ReduceChunks(in, tensor, op, /*offset_bytes=*/0);
        },
        deadline);
  }

  absl::Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op, uint64_t seq,
                             absl::Time deadline) override {
    const Tensor staged = Stage(input);
    return hub_->Exchange(
        rank_, seq, absl::StrCat("ReduceScatter ", input.TypeString(), " ", ReduceOpName(op)),
        staged.raw_data(),
        [&](const std::vector<const void*>& in) {
          ReduceChunks(in, output, op, rank_ * output.nbytes());
        },
        deadline);
  }

  absl::Status AllGather(const Tensor& input, const Tensor& output, uint64_t seq,
                         absl::Time deadline) override {
    const Tensor staged = Stage(input);
    const size_t chunk = input.nbytes();
    return hub_->Exchange(
        rank_, seq, absl::StrCat("AllGather ", input.TypeString()), staged.raw_data(),
        [&](const std::vector<const void*>& in) {
          for (int j = 0; j < world_; ++j) {
            CopyBytes(static_cast<char*>(output.raw_data()) + j * chunk, in[j], chunk);
          }
        },
        deadline);
  }

  absl::Status Broadcast(const Tensor& tensor, int root, uint64_t seq,
                         absl::Time deadline) override {
    const Tensor staged = rank_ == root ? Stage(tensor) : Tensor();
    return hub_->Exchange(
        rank_, seq, absl::StrCat("Broadcast ", tensor.TypeString(), " root ", root),
        staged.defined() ? staged.raw_data() : nullptr,
        [&](const std::vector<const void*>& in) {
          if (rank_ != root) CopyBytes(tensor.raw_data(), in[root], tensor.nbytes());
        },
        deadline);
  }

  absl::Status AllToAll(const Tensor& input, const Tensor& output, uint64_t seq,
                        absl::Time deadline) override {
    const Tensor staged = Stage(input);
    const size_t chunk = input.nbytes() / world_;
    return hub_->Exchange(
        rank_, seq, absl::StrCat("AllToAll ", input.TypeString()), staged.raw_data(),
        [&](const std::vector<const void*>& in) {
          for (int j = 0; j < world_; ++j) {
            CopyBytes(static_cast<char*>(output.raw_data()) + j * chunk,
                      static_cast<const char*>(in[j]) + rank_ * chunk, chunk);
          }
        },
        deadline);
  }

  absl::Status Barrier(uint64_t seq, absl::Time deadline) override {
    return hub_->Exchange(
        rank_, seq, "Barrier", nullptr, [](const std::vector<const void*>&) {}, deadline);
  }

  absl::StatusOr<Completion> PostSend(const Tensor& tensor, int dst, int tag) override {
    absl::Status status = hub_->Send(rank_, dst, tag, tensor);
    if (!status.ok()) return status;
    return Completion();  // buffered: complete once copied
  }

  absl::StatusOr<Completion> PostRecv(const Tensor& tensor, int src, int tag) override {
    std::shared_ptr<Hub::PendingRecv> recv = hub_->PostRecv(src, rank_, tag, tensor);
    return Completion([hub = hub_, recv, src, dst = rank_, tag](absl::Time deadline) {
      return hub->WaitRecv(recv, src, dst, tag, deadline);
    });
  }

  void Abort() override { hub_->Abort(rank_); }

  absl::Status Join(absl::Time deadline) {
    return hub_->Exchange(
        rank_, kJoinSeq, "the group", nullptr, [](const std::vector<const void*>&) {}, deadline);
  }

 private:
  // out = in[0] + in[1] + ... over the chunk at `offset_bytes` of every contribution.
  void ReduceChunks(const std::vector<const void*>& in, const Tensor& out, ReduceOp op,
                    size_t offset_bytes) const {
    auto chunk = [&](int j) { return static_cast<const char*>(in[j]) + offset_bytes; };
    CopyBytes(out.raw_data(), chunk(0), out.nbytes());
    for (int j = 1; j < world_; ++j) {
      ReduceArrays(out.dtype(), op, out.raw_data(), out.raw_data(), chunk(j),
                   static_cast<size_t>(out.numel()));
    }
  }

  std::shared_ptr<Hub> hub_;
  const int rank_;
  const int world_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeInProcessBackend(Store* store, int rank, int world,
                                                              const CommunicatorOptions& options) {
  const std::string key = "inprocess/hub";
  Registry& registry = GetRegistry();
  std::shared_ptr<Hub> hub;
  if (rank == 0) {
    hub = std::make_shared<Hub>(world);
    uint64_t id;
    {
      absl::MutexLock lock(&registry.mu);
      for (auto it = registry.hubs.begin(); it != registry.hubs.end();) {
        it = it->second.expired() ? registry.hubs.erase(it) : std::next(it);
      }
      id = registry.next_id++;
      registry.hubs[id] = hub;
    }
    absl::Status status = store->Set(key, absl::StrCat(::getpid(), ":", id, ":", world));
    if (!status.ok()) return status;
  } else {
    absl::StatusOr<std::string> value = store->Get(key, options.timeout);
    if (!value.ok()) return value.status();
    std::vector<std::string> parts = absl::StrSplit(*value, ':');
    int64_t pid = 0, hub_world = 0;
    uint64_t id = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &pid) ||
        !absl::SimpleAtoi(parts[1], &id) || !absl::SimpleAtoi(parts[2], &hub_world)) {
      return absl::DataLossError(absl::StrCat("bad in-process hub record '", *value, "'"));
    }
    if (pid != ::getpid()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the in-process backend needs every rank in one process; rank 0 is process ",
                       pid, ", this is process ", ::getpid()));
    }
    if (hub_world != world) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank 0 created a group of ", hub_world, ", this rank expects ", world));
    }
    absl::MutexLock lock(&registry.mu);
    hub = registry.hubs[id].lock();
    if (hub == nullptr) return absl::FailedPreconditionError("rank 0's hub no longer exists");
  }
  auto backend = std::make_unique<InProcessBackend>(hub, rank, world);
  absl::Status joined = backend->Join(absl::Now() + options.timeout);
  if (!joined.ok()) return joined;
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace kiln::dist
