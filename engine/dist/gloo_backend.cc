// GlooBackend: maps each collective onto gloo's option-struct API (allreduce, allgather,
// broadcast, alltoall, barrier), adds a ring reduce-scatter and point-to-point transfers on
// gloo's unbound buffers, and converts gloo's exceptions into absl::Status.
#include "engine/dist/gloo_backend.h"

#include <signal.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/dist/gloo_store.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoall.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "gloo/types.h"

namespace kiln::dist {
namespace {

// Slot prefixes for our own transfers, clear of gloo's collectives (0x01..0x08, gloo/types.h).
constexpr uint8_t kPointToPointSlotPrefix = 0x40;
constexpr uint8_t kReduceScatterSlotPrefix = 0x41;

// Note [Gloo errors]
// Gloo throws: IoException for transport failures (a peer that closed its connection) and for
// timeouts (the message then says "Timed out"), EnforceNotMet for broken preconditions. A timeout
// maps to DeadlineExceeded, other I/O errors to Unavailable, the rest to Internal.
absl::Status FromException(const std::exception& e) {
  const std::string message = e.what();
  if (absl::StrContains(message, "Timed out") || absl::StrContains(message, "timed out")) {
    return absl::DeadlineExceededError(message);
  }
  if (dynamic_cast<const gloo::IoException*>(&e) != nullptr) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

template <typename Fn>
absl::Status Guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return FromException(e);
  }
}

std::chrono::milliseconds Remaining(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return std::chrono::milliseconds(std::max<int64_t>(ms, 1));
}

uint32_t Tag(uint64_t seq) { return static_cast<uint32_t>(seq); }

// Gloo's buffer setters are templates that only need sizeof(T): call fn with a value of an
// unsigned type as wide as one element of `dtype`.
template <typename Fn>
void WithElementType(DType dtype, Fn&& fn) {
  switch (DTypeSize(dtype)) {
    case 1:
      fn(uint8_t{});
      return;
    case 2:
      fn(uint16_t{});
      return;
    case 4:
      fn(uint32_t{});
      return;
    default:
      fn(uint64_t{});
      return;
  }
}

bool Overlaps(const Tensor& a, const Tensor& b) {
  const char* a0 = static_cast<const char*>(a.raw_data());
  const char* b0 = static_cast<const char*>(b.raw_data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

absl::Status Aborted(absl::string_view what) {
  return absl::AbortedError(absl::StrCat(what, " was aborted"));
}

class GlooBackend : public Backend {
 public:
  GlooBackend(std::shared_ptr<gloo::Context> context, int rank, int world)
      : context_(std::move(context)), rank_(rank), world_(world) {}

  absl::Status AllReduce(const Tensor& tensor, ReduceOp op, uint64_t seq,
                         absl::Time deadline) override {
    if (world_ == 1 || tensor.numel() == 0) return absl::OkStatus();
    return Guarded([&] {
      gloo::AllreduceOptions opts(context_);
      WithElementType(tensor.dtype(), [&](auto t) {
        opts.setOutput(static_cast<decltype(t)*>(tensor.raw_data()),
                       static_cast<size_t>(tensor.numel()));
      });
      const DType dtype = tensor.dtype();
      opts.setReduceFunction([dtype, op](void* out, const void* a, const void* b, size_t n) {
        ReduceArrays(dtype, op, out, a, b, n);
      });
      opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
      opts.setTag(Tag(seq));
      opts.setTimeout(Remaining(deadline));
      gloo::allreduce(opts);
      return absl::OkStatus();
    });
  }

  // Note [Ring reduce-scatter]
  // Gloo's option-struct API has no reduce-scatter, so this is a ring on unbound buffers: in step
  // s (0 .. world-2) rank r sends its partial sum of chunk (r - s - 1) to rank r + 1, receives
  // the partial sum of chunk (r - s - 2) from rank r - 1 and adds its own input chunk to it.
  // After world - 1 steps it holds chunk r. Chunk c is summed in the fixed order
  //   ((x[c+1] + x[c+2]) + ...) + x[c]      (ranks mod world),
  // so results are bit-identical run to run. Traffic per rank: (world-1) * k elements.
  //
  // Note [A dead peer during a send]
  // A peer killed while our send to it is still pending (its data to us already received, ours
  // not yet taken) leaves waitSend blocked: this libgloo's TCP pair wakes pending receives when
  // the connection ends, not such a send (seen under load: the survivor stuck in waitSend here
  // after the peer's SIGKILL). The wait is bounded by the collective's deadline (TrainOptions::
  // collective_timeout_s, `kiln-train --collective-timeout`, 300 s by default), and the error
  // names the collective. Under kilnd or `kiln-train --nproc` the launcher stops the gang as soon
  // as a rank dies, so only ranks started by hand wait that long.
  absl::Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op, uint64_t seq,
                             absl::Time deadline) override {
    const size_t chunk_bytes = output.nbytes();
    const char* in = static_cast<const char*>(input.raw_data());
    auto chunk = [&](int c) {
      return in + static_cast<size_t>((c % world_ + world_) % world_) * chunk_bytes;
    };
    if (chunk_bytes == 0) return absl::OkStatus();
    if (world_ == 1) {
      std::memmove(output.raw_data(), in, chunk_bytes);
      return absl::OkStatus();
    }
    return Guarded([&]() -> absl::Status {
      std::vector<char> storage(2 * chunk_bytes);  // two (k) partial sums
      std::unique_ptr<gloo::transport::UnboundBuffer> a =
          context_->createUnboundBuffer(storage.data(), chunk_bytes);
      std::unique_ptr<gloo::transport::UnboundBuffer> b =
          context_->createUnboundBuffer(storage.data() + chunk_bytes, chunk_bytes);
      gloo::transport::UnboundBuffer* send = a.get();
      gloo::transport::UnboundBuffer* recv = b.get();
      const uint64_t slot = gloo::Slot::build(kReduceScatterSlotPrefix, Tag(seq));
      const int right = (rank_ + 1) % world_;
      const int left = (rank_ + world_ - 1) % world_;
      std::memcpy(send->ptr, chunk(rank_ - 1), chunk_bytes);
      for (int s = 0; s < world_ - 1; ++s) {
        recv->recv(left, slot);
        send->send(right, slot);
        if (!recv->waitRecv(Remaining(deadline))) return Aborted("receive");
        if (!send->waitSend(Remaining(deadline))) return Aborted("send");
        ReduceArrays(input.dtype(), op, recv->ptr, recv->ptr, chunk(rank_ - s - 2),
                     static_cast<size_t>(output.numel()));
        std::swap(send, recv);
      }
      std::memcpy(output.raw_data(), send->ptr, chunk_bytes);
      return absl::OkStatus();
    });
  }

  absl::Status AllGather(const Tensor& input, const Tensor& output, uint64_t seq,
                         absl::Time deadline) override {
    char* own = static_cast<char*>(output.raw_data()) + rank_ * input.nbytes();
    if (input.numel() == 0) return absl::OkStatus();
    if (world_ == 1) {
      std::memmove(own, input.raw_data(), input.nbytes());
      return absl::OkStatus();
    }
    // In place when the input already is this rank's chunk of the output; a copy when it overlaps
    // the output anywhere else (gloo would read it while writing).
    const bool in_place = input.raw_data() == own;
    const Tensor source = !in_place && Overlaps(input, output) ? input.Clone() : input;
    return Guarded([&] {
      gloo::AllgatherOptions opts(context_);
      WithElementType(input.dtype(), [&](auto t) {
        using T = decltype(t);
        if (!in_place) {
          opts.setInput(static_cast<T*>(source.raw_data()), static_cast<size_t>(source.numel()));
        }
        opts.setOutput(static_cast<T*>(output.raw_data()), static_cast<size_t>(output.numel()));
      });
      opts.setTag(Tag(seq));
      opts.setTimeout(Remaining(deadline));
      gloo::allgather(opts);
      return absl::OkStatus();
    });
  }

  absl::Status Broadcast(const Tensor& tensor, int root, uint64_t seq,
                         absl::Time deadline) override {
    if (world_ == 1 || tensor.numel() == 0) return absl::OkStatus();
    return Guarded([&] {
      gloo::BroadcastOptions opts(context_);
      WithElementType(tensor.dtype(), [&](auto t) {
        opts.setOutput(static_cast<decltype(t)*>(tensor.raw_data()),
                       static_cast<size_t>(tensor.numel()));
      });
      opts.setRoot(root);
      opts.setTag(Tag(seq));
      opts.setTimeout(Remaining(deadline));
      gloo::broadcast(opts);
      return absl::OkStatus();
    });
  }

  absl::Status AllToAll(const Tensor& input, const Tensor& output, uint64_t seq,
                        absl::Time deadline) override {
    if (input.numel() == 0) return absl::OkStatus();
    if (world_ == 1) {
      std::memmove(output.raw_data(), input.raw_data(), input.nbytes());
      return absl::OkStatus();
    }
    const Tensor source = Overlaps(input, output) ? input.Clone() : input;
    return Guarded([&] {
      gloo::AlltoallOptions opts(context_);
      WithElementType(input.dtype(), [&](auto t) {
        using T = decltype(t);
        opts.setInput(static_cast<T*>(source.raw_data()), static_cast<size_t>(source.numel()));
        opts.setOutput(static_cast<T*>(output.raw_data()), static_cast<size_t>(output.numel()));
      });
      opts.setTag(Tag(seq));
      opts.setTimeout(Remaining(deadline));
      gloo::alltoall(opts);
      return absl::OkStatus();
    });
  }

  absl::Status Barrier(uint64_t seq, absl::Time deadline) override {
    if (world_ == 1) return absl::OkStatus();
    return Guarded([&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(Tag(seq));
      opts.setTimeout(Remaining(deadline));
      gloo::barrier(opts);
      return absl::OkStatus();
    });
  }

  absl::StatusOr<Completion> PostSend(const Tensor& tensor, int dst, int tag) override {
    return PostTransfer(tensor, dst, tag, /*send=*/true);
  }

  absl::StatusOr<Completion> PostRecv(const Tensor& tensor, int src, int tag) override {
    return PostTransfer(tensor, src, tag, /*send=*/false);
  }

  void Abort() override {
    try {
      context_->closeConnections();
    } catch (const std::exception&) {
      // Already failing; closing is best effort.
    }
  }

 private:
  absl::StatusOr<Completion> PostTransfer(const Tensor& tensor, int peer, int tag, bool send) {
    if (tensor.numel() == 0) return Completion();
    std::shared_ptr<gloo::transport::UnboundBuffer> buffer;
    absl::Status posted = Guarded([&] {
      buffer = context_->createUnboundBuffer(tensor.raw_data(), tensor.nbytes());
      const uint64_t slot = gloo::Slot::build(kPointToPointSlotPrefix, static_cast<uint32_t>(tag));
      if (send) {
        buffer->send(peer, slot);
      } else {
        buffer->recv(peer, slot);
      }
      return absl::OkStatus();
    });
    if (!posted.ok()) return posted;
    // The completion holds the tensor so that its memory outlives the transfer.
    return Completion([buffer, tensor, send](absl::Time deadline) {
      return Guarded([&] {
        const bool done =
            send ? buffer->waitSend(Remaining(deadline)) : buffer->waitRecv(Remaining(deadline));
        return done ? absl::OkStatus() : Aborted(send ? "send" : "receive");
      });
    });
  }

  std::shared_ptr<gloo::Context> context_;
  const int rank_;
  const int world_;
};

// Note [SIGPIPE]
// Gloo writes to its sockets with writev(2), which raises SIGPIPE when the peer has died; the
// default action would kill this process instead of letting the failure surface as a Status.
// Before the first Gloo connection we therefore ignore SIGPIPE process-wide, but only when its
// disposition is still the default (a program that installed its own handler keeps it). Writes
// to a dead peer then fail with EPIPE, which gloo reports as an IoException.
void IgnoreDefaultSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current;
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeGlooBackend(Store* store, int rank, int world,
                                                         const CommunicatorOptions& options) {
  IgnoreDefaultSigpipe();
  gloo::transport::tcp::attr attr;
  if (!options.tcp_interface.empty()) {
    attr.iface = options.tcp_interface;
  } else {
    attr.hostname = options.tcp_host;  // empty: gloo uses gethostname()
  }
  PrefixStore scoped(store, "gloo/");
  GlooStore gloo_store(&scoped, options.timeout);
  try {
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, world);
    context->setTimeout(std::chrono::milliseconds(absl::ToInt64Milliseconds(options.timeout)));
    context->connectFullMesh(gloo_store, device);
    return std::unique_ptr<Backend>(new GlooBackend(std::move(context), rank, world));
  } catch (const std::exception& e) {
    if (!gloo_store.error().ok()) return gloo_store.error();
    return FromException(e);
  }
}

}  // namespace kiln::dist
