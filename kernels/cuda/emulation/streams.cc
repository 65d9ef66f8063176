// Streams and events of the kernel emulation (Note [Deferred streams] in streams.h): per stream a
// queue of work with sequence numbers, run in order by whichever thread drains it; an event is a
// (stream, sequence number) mark.
#include "kernels/cuda/emulation/streams.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/emulator_state.h"

namespace kiln::kernels::cuda::emulation {
namespace {

// A valid program's streams never wait on each other in a cycle; one that seems to has hung.
constexpr auto kCycleTimeout = std::chrono::seconds(120);

struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  struct Item {
    uint64_t seq;
    std::function<void()> work;
  };
  std::deque<Item> queue;
  uint64_t enqueued = 0;  // the sequence number of the last item queued
  uint64_t done = 0;      // every item up to this one has run
  bool running = false;   // a thread is running this stream's front item
  // While capturing: the work recorded so far, and why the capture broke ("" while it holds).
  std::vector<std::function<void()>>* recording = nullptr;
  std::string invalidated;
};

struct Graph {
  std::vector<std::function<void()>> work;
};

// The stream the calling thread is capturing, if any (thread-local capture mode).
thread_local Stream* capturing = nullptr;

struct Event {
  std::mutex mu;
  Stream* stream = nullptr;  // null: never recorded (complete)
  uint64_t seq = 0;
};

// Every stream ever created (streams are never freed: events may still point at them).
struct Registry {
  std::mutex mu;
  std::vector<Stream*> streams;
  std::vector<Stream*> defaults;  // per device, created on first use
  std::string failure;            // RecordDeferredFailure
};

Registry& R() {
  static Registry* r = new Registry();
  return *r;
}

Stream* NewStream() {
  Stream* s = new Stream();
  std::lock_guard<std::mutex> lock(R().mu);
  R().streams.push_back(s);
  return s;
}

Stream* StreamOf(cudaStream_t stream) {
  if (stream != nullptr) return reinterpret_cast<Stream*>(stream);
  int device = 0;
  cudaGetDevice(&device);
  Registry& r = R();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.defaults.empty()) r.defaults.assign(DeviceCount(), nullptr);
    if (r.defaults[device] != nullptr) return r.defaults[device];
  }
  Stream* s = NewStream();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.defaults[device] == nullptr) r.defaults[device] = s;
  return r.defaults[device];
}

// Runs `s` until every item up to `target` has run (Note [Deferred streams]).
void DrainTo(Stream* s, uint64_t target) {
  std::unique_lock<std::mutex> lock(s->mu);
  while (s->done < target) {
    if (s->running) {
      if (!s->cv.wait_for(lock, kCycleTimeout, [&] { return !s->running || s->done >= target; })) {
        std::fprintf(stderr,
                     "kernel emulation: a stream waited %lld s for another thread's work; the "
                     "streams wait on each other in a cycle\n",
                     static_cast<long long>(kCycleTimeout.count()));
        std::abort();
      }
      continue;
    }
    Stream::Item item = std::move(s->queue.front());
    s->queue.pop_front();
    s->running = true;
    lock.unlock();
    item.work();
    lock.lock();
    s->done = item.seq;
    s->running = false;
    s->cv.notify_all();
  }
}

void Drain(Stream* s) {
  uint64_t target;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    target = s->enqueued;
  }
  DrainTo(s, target);
}

}  // namespace

std::atomic<bool>& Mode() {
  static std::atomic<bool> deferred{[] {
    const char* env = std::getenv("KILN_EMULATED_STREAMS");
    return env != nullptr && std::strcmp(env, "deferred") == 0;
  }()};
  return deferred;
}

bool DeferredStreams() { return Mode().load(); }

void SetDeferredStreams(bool deferred) {
  DrainAllStreams();
  Mode() = deferred;
}

void Enqueue(cudaStream_t stream, std::function<void()> work) {
  Stream* s = StreamOf(stream);
  std::unique_lock<std::mutex> lock(s->mu);
  if (s->recording != nullptr) {
    s->recording->push_back(std::move(work));
    return;
  }
  if (!DeferredStreams()) {
    lock.unlock();
    work();
    return;
  }
  s->queue.push_back({++s->enqueued, std::move(work)});
}

cudaError_t BeginCapture(cudaStream_t stream) {
  if (stream == nullptr || capturing != nullptr) return cudaErrorStreamCaptureUnsupported;
  Stream* s = StreamOf(stream);
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->recording != nullptr) return cudaErrorIllegalState;
  s->recording = new std::vector<std::function<void()>>();
  s->invalidated.clear();
  capturing = s;
  return cudaSuccess;
}

cudaError_t EndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Stream* s = StreamOf(stream);
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->recording == nullptr || capturing != s) return cudaErrorIllegalState;
  std::unique_ptr<std::vector<std::function<void()>>> recorded(s->recording);
  s->recording = nullptr;
  capturing = nullptr;
  *graph = nullptr;
  if (!s->invalidated.empty()) {
    std::fprintf(stderr, "kernel emulation: stream capture invalidated: %s\n",
                 s->invalidated.c_str());
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = reinterpret_cast<cudaGraph_t>(new Graph{std::move(*recorded)});
  return cudaSuccess;
}

cudaError_t CheckNotCapturing(const char* what) {
  Stream* s = capturing;
  if (s == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->invalidated.empty()) s->invalidated = std::string(what) + " during stream capture";
  return cudaErrorStreamCaptureUnsupported;
}

cudaGraphExec_t InstantiateGraph(cudaGraph_t graph) {
  return reinterpret_cast<cudaGraphExec_t>(new Graph(*reinterpret_cast<Graph*>(graph)));
}

void LaunchGraph(cudaGraphExec_t exec, cudaStream_t stream) {
  for (const std::function<void()>& work : reinterpret_cast<Graph*>(exec)->work) {
    Enqueue(stream, work);
  }
}

void DestroyGraph(cudaGraph_t graph) { delete reinterpret_cast<Graph*>(graph); }

// A launched replay queued copies of the work: destroying the graph leaves them valid.
void DestroyGraphExec(cudaGraphExec_t exec) { delete reinterpret_cast<Graph*>(exec); }

cudaStream_t CreateStream() { return reinterpret_cast<cudaStream_t>(NewStream()); }

void DestroyStream(cudaStream_t stream) { DrainStream(stream); }

void DrainStream(cudaStream_t stream) {
  if (DeferredStreams()) Drain(StreamOf(stream));
}

void DrainAllStreams() {
  if (!DeferredStreams()) return;
  std::vector<Stream*> streams;
  {
    std::lock_guard<std::mutex> lock(R().mu);
    streams = R().streams;
  }
  for (Stream* s : streams) Drain(s);
}

cudaEvent_t CreateEvent() { return reinterpret_cast<cudaEvent_t>(new Event()); }

void DestroyEvent(cudaEvent_t event) { delete reinterpret_cast<Event*>(event); }

void RecordEvent(cudaEvent_t event, cudaStream_t stream) {
  if (!DeferredStreams()) return;
  Stream* s = StreamOf(stream);
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    seq = s->enqueued;
  }
  Event* e = reinterpret_cast<Event*>(event);
  std::lock_guard<std::mutex> lock(e->mu);
  e->stream = s;
  e->seq = seq;
}

void DrainEvent(cudaEvent_t event) {
  if (!DeferredStreams()) return;
  Event* e = reinterpret_cast<Event*>(event);
  Stream* s;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(e->mu);
    s = e->stream;
    seq = e->seq;
  }
  if (s != nullptr) DrainTo(s, seq);
}

void StreamWaitEvent(cudaStream_t stream, cudaEvent_t event) {
  if (!DeferredStreams()) return;
  Event* e = reinterpret_cast<Event*>(event);
  Stream* other;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(e->mu);  // the event as it is now, not as re-recorded later
    other = e->stream;
    seq = e->seq;
  }
  if (other == nullptr || other == StreamOf(stream)) return;
  Enqueue(stream, [other, seq] { DrainTo(other, seq); });
}

void RecordDeferredFailure(const std::string& what) {
  if (!DeferredStreams()) return;
  std::lock_guard<std::mutex> lock(R().mu);
  if (R().failure.empty()) R().failure = what;
}

std::string DeferredFailure() {
  if (!DeferredStreams()) return "";
  std::lock_guard<std::mutex> lock(R().mu);
  return R().failure;
}

void ClearDeferredFailure() {
  if (!DeferredStreams()) return;
  std::lock_guard<std::mutex> lock(R().mu);
  R().failure.clear();
}

cudaError_t DeferredStatus() {
  return DeferredFailure().empty() ? cudaSuccess : cudaErrorLaunchFailure;
}

}  // namespace kiln::kernels::cuda::emulation
