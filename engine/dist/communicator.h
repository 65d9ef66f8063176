// Communicator: the engine's one interface to collective communication (all-reduce, reduce-
// scatter, all-gather, broadcast, send/recv, all-to-all, barrier) over a run-time-chosen backend
// ("gloo": TCP between processes; "inprocess": threads of one process). Every call returns at
// once with a Work; the transfer runs on the communicator's own thread, in issue order.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/core/tensor.h"
#include "engine/dist/backend.h"
#include "engine/dist/reduce.h"
#include "engine/dist/store.h"

namespace kiln::dist {

// The handle to one issued operation.
class Work {
 public:
  explicit Work(std::string description) : description_(std::move(description)) {}

  // Blocks until the operation finished or `timeout` passed. Returns the operation's status, or
  // DeadlineExceeded naming the operation when this wait gave up (the operation keeps running
  // and may still complete; wait again). Errors name the collective, rank and sequence number.
  absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration());
  bool IsCompleted() const;
  // "AllReduce #12 on rank 1 of 4 (gloo)"
  const std::string& description() const { return description_; }

  // Used by Communicator: marks the operation finished. Only the first call counts.
  void Complete(absl::Status status);

 private:
  const std::string description_;
  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

struct CommunicatorOptions {
  // Bound on every wait inside one operation, counted from when the operation starts running on
  // the communication thread. A peer that stalls longer fails the operation (see Note [Failures]).
  absl::Duration timeout = absl::Seconds(300);
  // Gloo: the network interface to bind ("eth0"); wins over tcp_host when both are set.
  std::string tcp_interface;
  // Gloo: bind to the address this host name or IP resolves to. Both empty: the machine's host
  // name, as Gloo resolves it.
  std::string tcp_host;
  // NCCL: the CUDA device of this rank; -1 picks rank modulo the number of devices.
  int cuda_device = -1;
};

// Note [Failures]
// A backend error or a timeout fails the operation with a status whose message names it, e.g.
//   "AllReduce #12 on rank 1 of 4 (gloo, f32[1000003], sum) failed: <cause>".
// The communicator is then poisoned: the backend is told to abort (Gloo closes its connections
// so that peers blocked on this rank fail at once instead of waiting out their timeouts) and every
// later operation fails fast with the first error. A dead peer shows up as Unavailable (connection
// closed) or DeadlineExceeded (silent peer); nothing waits forever. Invalid arguments (wrong
// sizes, dtypes) fail only that operation, with InvalidArgument, and poison nothing.

// Note [Sequence numbers]
// Collectives are numbered 0, 1, 2, ... in issue order; every rank must issue the same
// collectives in the same order, so "#12" names the same collective on every rank and peers' error
// messages can be matched. Send/Recv are numbered separately (they are not symmetric across
// ranks) and also name their peer and tag. Issuing from several threads is safe; the order is
// the order in which the calls took the communicator's lock.

// Note [Reduction order]
// Reductions are deterministic: the same inputs on the same world size and backend give the same
// bits, run after run, on every rank. Gloo all-reduce uses gloo's ring: the buffer is cut into
// segments by (world, size) alone and each segment's partial sum travels the ring in a fixed
// order; reduce-scatter uses our ring (Note [Ring reduce-scatter] in gloo_backend.cc). The
// in-process backend reduces in rank order, ((x0 + x1) + x2) + .... Results may differ in the
// last bits between backends or world sizes; bf16/f16 round once per partial sum
// (Note [16-bit reduction] in reduce.h); avg is that sum divided by world_size in f32.

// Note [Chunked collectives and padding]
// ReduceScatter, AllGather and AllToAll move equal chunks: k elements per rank. A caller whose
// flat buffer has n elements pads it to world * PaddedChunk(n, world) elements (zeros for sums)
// and ignores the tail; AllReduce, Broadcast and Send/Recv take any size, including 0.
inline int64_t PaddedChunk(int64_t n, int world) { return (n + world - 1) / world; }

class Communicator {
 public:
  // Takes ownership of `backend` and starts the communication threads.
  Communicator(std::unique_ptr<Backend> backend, std::string backend_name, int rank, int world,
               CommunicatorOptions options);
  // Waits for every issued operation to finish (each is bounded by the timeout), then closes.
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  const std::string& backend() const { return backend_name_; }
  const CommunicatorOptions& options() const { return options_; }

  // Tensors are handles: outputs are written through them, so views may be passed directly. They
  // must be contiguous tensors on the backend's device (CPU; CUDA for nccl); the Work keeps them
  // alive until it completes. Do not touch an output (or an AllReduce/Broadcast tensor) until its
  // Work completed.
  //
  // In place. Sum/max: f32, bf16, f16, i32, i64; avg: floating only. Any size.
  std::shared_ptr<Work> AllReduce(const Tensor& tensor, ReduceOp op);
  // input: (world * k), output: (k) — this rank's chunk of the reduction. Same dtypes as AllReduce.
  std::shared_ptr<Work> ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op);
  // input: (k), output: (world * k); chunk j of output is rank j's input. Any dtype; the input
  // may be a view of the output (in-place all-gather).
  std::shared_ptr<Work> AllGather(const Tensor& input, const Tensor& output);
  // In place: every rank's tensor ends up equal to root's. Any dtype.
  std::shared_ptr<Work> Broadcast(const Tensor& tensor, int root);
  // Point to point, matched by (source, destination, tag) in issue order. Posting never waits
  // for the peer, so both sides may send before either receives; the Work completes when the
  // data has left (Send; in-process sends are buffered) or arrived (Recv). Completions are
  // observed in issue order. Any dtype; the sizes of a matched pair must agree.
  std::shared_ptr<Work> Send(const Tensor& tensor, int dst, int tag);
  std::shared_ptr<Work> Recv(const Tensor& tensor, int src, int tag);
  // input, output: (world * k); output chunk j = rank j's input chunk `rank()`. Any dtype.
  std::shared_ptr<Work> AllToAll(const Tensor& input, const Tensor& output);
  std::shared_ptr<Work> Barrier();

 private:
  enum class Kind { kCollective, kPointToPoint };  // numbered separately, Note [Sequence numbers]
  // Runs on the communication thread with the op's sequence number. Collectives finish inside and
  // return an empty completion; Send/Recv post and return the completion for the other thread.
  using RunFn =
      std::function<absl::StatusOr<Backend::Completion>(uint64_t seq, absl::Time deadline)>;
  struct Op {
    std::shared_ptr<Work> work;
    uint64_t seq = 0;
    RunFn run;
    absl::Time deadline;  // set when the op starts running
    Backend::Completion completion;
    Backend::IssueMark mark;  // Note [Issue order on a device]
  };

  // Numbers the op and queues it, under one lock so that numbers follow queue order. A non-OK
  // `valid` completes the Work at once with InvalidArgument instead.
  std::shared_ptr<Work> Enqueue(Kind kind, absl::string_view name, absl::string_view detail,
                                const absl::Status& valid, RunFn run);
  // Wraps a collective's synchronous backend call.
  std::shared_ptr<Work> IssueCollective(
      absl::string_view name, absl::string_view detail, const absl::Status& valid,
      std::function<absl::Status(uint64_t seq, absl::Time deadline)> run);
  // Defined, contiguous and on the backend's device type.
  absl::Status CheckArg(const Tensor& t, absl::string_view name) const;
  void RunOps();          // the communication thread
  void RunCompletions();  // the completion thread (point-to-point)
  void Fail(Op& op, const absl::Status& cause);

  const std::unique_ptr<Backend> backend_;
  const std::string backend_name_;
  const int rank_;
  const int world_;
  const CommunicatorOptions options_;

  absl::Mutex mu_;
  uint64_t next_collective_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_p2p_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<Op> completions_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool ops_done_ ABSL_GUARDED_BY(mu_) = false;  // the communication thread has exited
  absl::Status poison_ ABSL_GUARDED_BY(mu_);    // the first failure

  std::thread ops_thread_;
  std::thread completion_thread_;
};

// Builds a communicator for `rank` of `world` on `backend` ("gloo", "inprocess" or "nccl"), meeting the
// other ranks through `store`. Every rank must create its communicators in the same order: each
// gets its own key space in the store (a per-rank counter numbers them), so communicators never
// read each other's rendezvous keys. Give each job attempt its own key space (a PrefixStore with
// JobScope) so that a restarted gang never meets the previous attempt's addresses. Fails (never
// hangs) when peers do not show up within options.timeout.
absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(absl::string_view backend,
                                                               Store* store, int rank, int world,
                                                               const CommunicatorOptions& options);

}  // namespace kiln::dist
