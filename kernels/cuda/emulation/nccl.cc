// The NCCL calls of engine/dist/nccl_backend.cc, answered by the kernel emulation (Note [Kernel
// emulation] in cuda_emulation.h) for ranks that are threads of one process, each on its own
// emulated device (KILN_EMULATED_DEVICES, host_runtime.cc). A collective is a rendezvous: each
// rank's call waits until every rank of the communicator has called, the last to arrive computes
// every rank's result (all buffers live in this one address space), and all return together.
// Calls run on their stream (streams.h): at once, or queued until the stream is drained (Note
// [Deferred streams]), when a failure becomes the communicator's asynchronous error. Sends are
// queued in a mailbox per (sender, receiver) and receives wait for theirs, in order; inside
// ncclGroupStart/End every send is queued before any receive waits, so an all-to-all cannot
// deadlock. Init returns ncclInProgress (the non-blocking mode the backend asks for), so the
// backend's settling path runs too. A rank that waits longer than kPeerTimeout for its peers
// gets ncclSystemError and ncclGetLastError says why: a test hangs for no longer than that. A
// buffer that is not memory of the communicator's device is refused (ncclInvalidArgument).
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/emulator_state.h"
#include "kernels/cuda/emulation/streams.h"

namespace kiln::kernels::cuda::emulation {
namespace {

constexpr auto kPeerTimeout = std::chrono::seconds(30);

enum class Kind { kAllReduce, kReduceScatter, kAllGather, kBroadcast };

struct Call {
  const void* send = nullptr;
  void* recv = nullptr;
};

// The ranks of one communicator (created by the first rank to init with its unique id).
struct Clique {
  explicit Clique(int world) : world(world), calls(world) {}
  const int world;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<Call> calls;
  std::map<std::pair<int, int>, std::deque<std::vector<char>>> mailboxes;  // (from, to)
};

struct Comm {
  std::shared_ptr<Clique> clique;
  int rank = 0;
  int device = 0;  // the current device when it was created: its buffers must live there
  std::mutex mu;   // the error state, set by whichever thread ran the failed work
  std::string last_error;
  ncclResult_t async = ncclSuccess;  // the first failure of queued work
  std::atomic<bool> aborted{false};
};

ncclResult_t SetError(Comm* comm, ncclResult_t result, const std::string& why) {
  std::lock_guard<std::mutex> lock(comm->mu);
  comm->last_error = why;
  return result;
}

// Runs `call` on `stream`: its result at once, or ncclSuccess and, should the queued call fail,
// the communicator's asynchronous error.
ncclResult_t OnStream(Comm* comm, cudaStream_t stream, std::function<ncclResult_t()> call) {
  if (!DeferredStreams()) return call();
  Enqueue(stream, [comm, call = std::move(call)] {
    if (comm->aborted.load()) return;  // ncclCommAbort drops what was queued
    const ncclResult_t r = call();
    std::lock_guard<std::mutex> lock(comm->mu);
    if (r != ncclSuccess && comm->async == ncclSuccess) comm->async = r;
  });
  return ncclSuccess;
}

// ncclSuccess, or ncclInvalidArgument (and the reason) when `p` is not memory of the
// communicator's device — on a machine with several GPUs, NCCL would fault or misread.
ncclResult_t CheckBuffer(Comm* comm, const void* p, const char* what) {
  if (p == nullptr) return ncclSuccess;
  const int owner = DeviceOf(p);
  if (owner == comm->device) return ncclSuccess;
  return SetError(
      comm, ncclInvalidArgument,
      std::string("kernel emulation: the ") + what + " buffer is " +
          (owner < 0 ? std::string("host memory") : "on device " + std::to_string(owner)) +
          ", the communicator on device " + std::to_string(comm->device));
}

struct Registry {
  std::mutex mu;
  std::map<std::string, std::weak_ptr<Clique>> cliques;
  std::atomic<uint64_t> next_id{0};
};

Registry& R() {
  static Registry* r = new Registry();
  return *r;
}

size_t TypeBytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    default:
      return 8;
  }
}

double Get(const void* base, ncclDataType_t t, size_t i) {
  switch (t) {
    case ncclFloat32:
      return static_cast<const float*>(base)[i];
    case ncclFloat64:
      return static_cast<const double*>(base)[i];
    case ncclBfloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case ncclFloat16:
      return __half2float(static_cast<const __half*>(base)[i]);
    case ncclInt32:
      return static_cast<const int32_t*>(base)[i];
    case ncclUint32:
      return static_cast<const uint32_t*>(base)[i];
    case ncclInt64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case ncclUint64:
      return static_cast<double>(static_cast<const uint64_t*>(base)[i]);
    case ncclInt8:
      return static_cast<const int8_t*>(base)[i];
    default:
      return static_cast<const uint8_t*>(base)[i];
  }
}

void Put(void* base, ncclDataType_t t, size_t i, double v) {
  switch (t) {
    case ncclFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      return;
    case ncclFloat64:
      static_cast<double*>(base)[i] = v;
      return;
    case ncclBfloat16:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(static_cast<float>(v));
      return;
    case ncclFloat16:
      static_cast<__half*>(base)[i] = __float2half_rn(static_cast<float>(v));
      return;
    case ncclInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      return;
    case ncclUint32:
      static_cast<uint32_t*>(base)[i] = static_cast<uint32_t>(v);
      return;
    case ncclInt64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v);
      return;
    case ncclUint64:
      static_cast<uint64_t*>(base)[i] = static_cast<uint64_t>(v);
      return;
    case ncclInt8:
      static_cast<int8_t*>(base)[i] = static_cast<int8_t>(v);
      return;
    default:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      return;
  }
}

// element i of the reduction over ranks of their send buffers (in rank order, so it repeats).
double Reduce(const Clique& c, ncclDataType_t t, ncclRedOp_t op, size_t i) {
  double acc = Get(c.calls[0].send, t, i);
  for (int r = 1; r < c.world; ++r) {
    const double v = Get(c.calls[r].send, t, i);
    acc = op == ncclMax    ? std::max(acc, v)
          : op == ncclMin  ? std::min(acc, v)
          : op == ncclProd ? acc * v
                           : acc + v;
  }
  return op == ncclAvg ? acc / c.world : acc;
}

// Every rank's result, computed by the last rank to arrive (the others wait on the clique).
void Compute(Clique& c, Kind kind, size_t count, ncclDataType_t t, ncclRedOp_t op, int root) {
  const size_t bytes = count * TypeBytes(t);
  switch (kind) {
    case Kind::kAllReduce: {
      std::vector<char> out(bytes);
      for (size_t i = 0; i < count; ++i) Put(out.data(), t, i, Reduce(c, t, op, i));
      for (const Call& call : c.calls) std::memcpy(call.recv, out.data(), bytes);
      return;
    }
    case Kind::kReduceScatter: {  // count: per rank
      std::vector<char> out(bytes * c.world);
      for (size_t i = 0; i < count * c.world; ++i) Put(out.data(), t, i, Reduce(c, t, op, i));
      for (int r = 0; r < c.world; ++r) std::memcpy(c.calls[r].recv, out.data() + r * bytes, bytes);
      return;
    }
    case Kind::kAllGather: {  // count: per rank
      std::vector<char> out(bytes * c.world);
      for (int r = 0; r < c.world; ++r) std::memcpy(out.data() + r * bytes, c.calls[r].send, bytes);
      for (const Call& call : c.calls) std::memcpy(call.recv, out.data(), out.size());
      return;
    }
    case Kind::kBroadcast: {
      std::vector<char> out(static_cast<const char*>(c.calls[root].send),
                            static_cast<const char*>(c.calls[root].send) + bytes);
      for (const Call& call : c.calls) std::memcpy(call.recv, out.data(), bytes);
      return;
    }
  }
}

ncclResult_t Rendezvous(Comm* comm, Kind kind, const void* send, void* recv, size_t count,
                        ncclDataType_t t, ncclRedOp_t op, int root) {
  Clique& c = *comm->clique;
  std::unique_lock<std::mutex> lock(c.mu);
  c.calls[comm->rank] = Call{send, recv};
  const uint64_t generation = c.generation;
  if (++c.arrived == c.world) {
    Compute(c, kind, count, t, op, root);
    c.arrived = 0;
    ++c.generation;
    c.cv.notify_all();
    return ncclSuccess;
  }
  if (!c.cv.wait_for(lock, kPeerTimeout, [&] { return c.generation != generation; })) {
    return SetError(comm, ncclSystemError,
                    "kernel emulation: a collective waited too long for its peers");
  }
  return ncclSuccess;
}

ncclResult_t Collective(ncclComm_t handle, Kind kind, const void* send, void* recv, size_t count,
                        ncclDataType_t t, ncclRedOp_t op, int root, cudaStream_t stream) {
  Comm* comm = reinterpret_cast<Comm*>(handle);
  for (const ncclResult_t r :
       {CheckBuffer(comm, send, "send"), CheckBuffer(comm, recv, "receive")}) {
    if (r != ncclSuccess) return r;
  }
  return OnStream(comm, stream,
                  [=] { return Rendezvous(comm, kind, send, recv, count, t, op, root); });
}

struct PointToPoint {
  bool send;
  Comm* comm;
  const void* send_buffer;
  void* recv_buffer;
  size_t bytes;
  int peer;
  cudaStream_t stream;
};

ncclResult_t Execute(const PointToPoint& p) {
  Clique& c = *p.comm->clique;
  std::unique_lock<std::mutex> lock(c.mu);
  if (p.send) {
    const char* b = static_cast<const char*>(p.send_buffer);
    c.mailboxes[{p.comm->rank, p.peer}].emplace_back(b, b + p.bytes);
    c.cv.notify_all();
    return ncclSuccess;
  }
  auto& box = c.mailboxes[{p.peer, p.comm->rank}];
  if (!c.cv.wait_for(lock, kPeerTimeout, [&] { return !box.empty(); })) {
    return SetError(p.comm, ncclSystemError,
                    "kernel emulation: a receive waited too long for its send");
  }
  if (box.front().size() != p.bytes) {
    return SetError(p.comm, ncclInvalidUsage,
                    "kernel emulation: a send and its receive differ in size");
  }
  std::memcpy(p.recv_buffer, box.front().data(), p.bytes);
  box.pop_front();
  return ncclSuccess;
}

// The calling thread's open group (ncclGroupStart .. ncclGroupEnd).
thread_local int group_depth = 0;
thread_local std::vector<PointToPoint> group_ops;

ncclResult_t PointToPointCall(const PointToPoint& p) {
  const ncclResult_t buffer = p.send ? CheckBuffer(p.comm, p.send_buffer, "send")
                                     : CheckBuffer(p.comm, p.recv_buffer, "receive");
  if (buffer != ncclSuccess) return buffer;
  if (group_depth > 0) {
    group_ops.push_back(p);
    return ncclSuccess;
  }
  return OnStream(p.comm, p.stream, [p] { return Execute(p); });
}

}  // namespace
}  // namespace kiln::kernels::cuda::emulation

namespace em = kiln::kernels::cuda::emulation;

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error (emulated)";
    case ncclInProgress:
      return "operation in progress (emulated)";
    case ncclInvalidUsage:
      return "invalid usage (emulated)";
    case ncclInvalidArgument:
      return "invalid argument (emulated)";
    default:
      return "system error (emulated)";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  if (comm == nullptr) return "";
  em::Comm* c = reinterpret_cast<em::Comm*>(comm);
  thread_local std::string copy;
  std::lock_guard<std::mutex> lock(c->mu);
  copy = c->last_error;
  return copy.c_str();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof(*id));
  const std::string name = "kiln-emulated-" + std::to_string(em::R().next_id++);
  std::memcpy(id->internal, name.data(), name.size());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  const std::string key(id.internal, strnlen(id.internal, sizeof(id.internal)));
  std::shared_ptr<em::Clique> clique;
  {
    std::lock_guard<std::mutex> lock(em::R().mu);
    std::weak_ptr<em::Clique>& slot = em::R().cliques[key];
    clique = slot.lock();
    if (clique == nullptr) {
      clique = std::make_shared<em::Clique>(nranks);
      slot = clique;
    }
  }
  if (clique->world != nranks) return ncclInvalidUsage;
  em::Comm* c = new em::Comm();
  c->clique = std::move(clique);
  c->rank = rank;
  cudaGetDevice(&c->device);
  *comm = reinterpret_cast<ncclComm_t>(c);
  return config != nullptr && config->blocking == 0 ? ncclInProgress : ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  em::Comm* c = reinterpret_cast<em::Comm*>(comm);
  std::lock_guard<std::mutex> lock(c->mu);
  *state = c->async;  // immediate calls have completed when they return
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  em::Comm* c = reinterpret_cast<em::Comm*>(comm);
  c->aborted = true;
  // Queued work may still name it (it then does nothing): kept when work is deferred.
  if (!em::DeferredStreams()) delete c;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return em::Collective(comm, em::Kind::kAllReduce, send, recv, count, type, op, 0, stream);
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return em::Collective(comm, em::Kind::kReduceScatter, send, recv, recv_count, type, op, 0,
                        stream);
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  return em::Collective(comm, em::Kind::kAllGather, send, recv, send_count, type, ncclSum, 0,
                        stream);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  return em::Collective(comm, em::Kind::kBroadcast, send, recv, count, type, ncclSum, root, stream);
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return em::PointToPointCall({true, reinterpret_cast<em::Comm*>(comm), send, nullptr,
                               count * em::TypeBytes(type), peer, stream});
}

ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return em::PointToPointCall({false, reinterpret_cast<em::Comm*>(comm), nullptr, recv,
                               count * em::TypeBytes(type), peer, stream});
}

ncclResult_t ncclGroupStart() {
  ++em::group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (em::group_depth == 0) return ncclInvalidUsage;
  if (--em::group_depth > 0) return ncclSuccess;
  std::vector<em::PointToPoint> ops;
  ops.swap(em::group_ops);
  if (ops.empty()) return ncclSuccess;
  // One piece of work on the first call's stream: every send queued before any receive waits.
  return em::OnStream(ops[0].comm, ops[0].stream, [ops] {
    ncclResult_t result = ncclSuccess;
    for (const em::PointToPoint& p : ops) {
      if (p.send && result == ncclSuccess) result = em::Execute(p);
    }
    for (const em::PointToPoint& p : ops) {
      if (!p.send && result == ncclSuccess) result = em::Execute(p);
    }
    return result;
  });
}

}  // extern "C"
