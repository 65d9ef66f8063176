// The block scheduler of the kernel emulation (Note [Kernel emulation] in cuda_emulation.h): one
// fiber per CUDA thread, run one after another between synchronization points, with the barrier,
// shuffle and launch-configuration checks that turn kernel bugs into launch failures.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/emulator_state.h"
#include "kernels/cuda/emulation/streams.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define KILN_EMULATION_ASAN 1
#endif

// Note [Fiber switch]
// glibc's swapcontext saves and restores the signal mask with a system call on every switch, and
// the emulation switches at every barrier and shuffle of every thread: most of a test's time went
// to the kernel. kiln_emulation_switch(save, next) is the whole switch instead (x86-64 System V):
// push the callee-saved registers, store the stack pointer into *save, load `next`, pop, return —
// into wherever `next` was saved, or, for a new fiber, into FiberEntry (InitialStack lays out the
// registers and that return address).
#if !defined(__x86_64__)
#error "the kernel emulation's fiber switch is written for x86-64"
#endif
extern "C" void kiln_emulation_switch(void** save_sp, void* next_sp);
asm(R"(
  .text
  .globl kiln_emulation_switch
  .type kiln_emulation_switch, @function
kiln_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kiln_emulation_switch, .-kiln_emulation_switch
)");

#if defined(KILN_EMULATION_ASAN)
// The emulated tests look for out-of-bounds accesses, not leaks: a failed launch abandons its
// fibers' stacks with whatever they own, and the engine keeps some singletons for the process.
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }
#endif

namespace kiln::kernels::cuda::emulation {
namespace {

void FiberMain();

[[noreturn]] void FiberEntry() {
  FiberMain();
  std::abort();  // FiberMain switches away for good
}

// A new fiber's saved stack pointer: six zero registers and FiberEntry as the return address,
// placed so that FiberEntry starts with the stack aligned as after a call (rsp % 16 == 8).
void* InitialStack(char* stack, size_t bytes) {
  uintptr_t top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top - 64);  // 16-byte aligned
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  sp[6] = reinterpret_cast<void*>(&FiberEntry);
  sp[7] = nullptr;
  return sp;
}

constexpr size_t kStackBytes = size_t{512} << 10;
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

enum class FiberState { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

// One asynchronous copy to shared memory: the bytes read from global memory when it was issued
// (zero-filled past the source size), written to `dst` when a wait completes it.
struct PendingCopy {
  unsigned char* dst = nullptr;
  std::vector<unsigned char> bytes;
};

struct Fiber {
  void* sp = nullptr;  // the saved stack pointer while the fiber is switched out
  std::unique_ptr<char[]> stack;
  uint3 index;
  int linear = 0;
  int memo_calls = 0;  // WarpMemo slots taken since the warp's last barrier
  // Note [Emulated asynchronous copies]: the copies issued since the last commit, and the
  // committed groups not yet waited for (oldest first).
  std::vector<PendingCopy> open_copies;
  std::deque<std::vector<PendingCopy>> committed_copies;
  FiberState state = FiberState::kReady;
  void* fake_stack = nullptr;  // AddressSanitizer's bookkeeping of this fiber's stack
};

struct AlignedFree {
  void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t{128}); }
};

// The state of the launch being run, one per host thread: each thread runs its own launches (its
// fibers run on it), so ranks on threads emulate their devices side by side.
struct Scheduler {
  ThreadOrder order = ThreadOrder::kAlternate;
  bool reverse_block = false;  // the order of the block being run
  uint64_t launches = 0;       // launches run so far (kAlternate flips with each)
  dim3 grid, block;
  uint3 block_index;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::unique_ptr<unsigned char[], AlignedFree> shared;
  std::vector<std::vector<uint64_t>> warp_slots;
  std::vector<std::vector<std::vector<float>>> warp_memos;  // per warp, per slot
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  std::string block_failure;
  const void* scheduler_stack = nullptr;  // AddressSanitizer: the scheduler's stack
  size_t scheduler_stack_size = 0;
};

thread_local Scheduler t_scheduler;
Scheduler& S() { return t_scheduler; }

[[noreturn]] void Misuse(const char* what) {
  std::fprintf(stderr, "kernel emulation: %s\n", what);
  std::abort();
}

Fiber& Current() {
  Fiber* f = S().current;
  if (f == nullptr) Misuse("a device builtin was used outside a kernel");
  return *f;
}

// Leaves the current fiber for the scheduler; returns when the scheduler resumes it (never, when
// `finished`).
void SwitchToScheduler(bool finished) {
  Scheduler& s = S();
  Fiber& f = Current();
#if defined(KILN_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.fake_stack, s.scheduler_stack,
                                 s.scheduler_stack_size);
#else
  (void)finished;
#endif
  kiln_emulation_switch(&f.sp, s.scheduler_sp);
#if defined(KILN_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &s.scheduler_stack, &s.scheduler_stack_size);
#endif
}

void FiberMain() {
  Scheduler& s = S();
#if defined(KILN_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &s.scheduler_stack, &s.scheduler_stack_size);
#endif
  (*s.body)();
  Current().state = FiberState::kDone;
  SwitchToScheduler(/*finished=*/true);
}

void Resume(Fiber& f) {
  Scheduler& s = S();
  s.current = &f;
#if defined(KILN_EMULATION_ASAN)
  void* scheduler_fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&scheduler_fake_stack, f.stack.get(), kStackBytes);
#endif
  kiln_emulation_switch(&s.scheduler_sp, f.sp);
#if defined(KILN_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#endif
  s.current = nullptr;
}

std::string Describe(const uint3& v) {
  std::ostringstream o;
  o << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return o.str();
}

// Releases the warps whose lanes all wait at a warp barrier; "" or the divergence found.
std::string ReleaseWarps(bool* released) {
  Scheduler& s = S();
  const int n = static_cast<int>(s.block.x * s.block.y * s.block.z);
  for (int w0 = 0; w0 < n; w0 += kWarpSize) {
    const int w1 = std::min(n, w0 + kWarpSize);
    int waiting = 0;
    for (int i = w0; i < w1; ++i) waiting += s.fibers[i].state == FiberState::kAtWarpBarrier;
    if (waiting == 0) continue;
    if (waiting != w1 - w0) {
      for (int i = w0; i < w1; ++i) {
        if (s.fibers[i].state == FiberState::kAtWarpBarrier) continue;
        std::ostringstream o;
        o << "warp " << w0 / kWarpSize << ": " << waiting << " lanes wait at __syncwarp or a "
          << "shuffle while lane " << i - w0 << " "
          << (s.fibers[i].state == FiberState::kDone ? "has exited" : "waits at __syncthreads");
        return o.str();
      }
    }
    for (int i = w0; i < w1; ++i) {
      s.fibers[i].state = FiberState::kReady;
      s.fibers[i].memo_calls = 0;
    }
    s.warp_memos[w0 / kWarpSize].clear();
    *released = true;
  }
  return "";
}

// Runs the current block to its end; "" or the failure.
std::string RunBlock(size_t dynamic_shared_bytes) {
  Scheduler& s = S();
  const int n = static_cast<int>(s.block.x * s.block.y * s.block.z);
  while (static_cast<int>(s.fibers.size()) < n) {
    s.fibers.emplace_back();
    s.fibers.back().stack.reset(new char[kStackBytes]);
  }
  for (int i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    f.linear = i;
    f.index = uint3{i % s.block.x, (i / s.block.x) % s.block.y, i / (s.block.x * s.block.y)};
    f.state = FiberState::kReady;
    f.memo_calls = 0;
    f.open_copies.clear();
    f.committed_copies.clear();
    f.fake_stack = nullptr;
    f.sp = InitialStack(f.stack.get(), kStackBytes);
  }
  s.shared.reset(dynamic_shared_bytes == 0 ? nullptr
                                           : static_cast<unsigned char*>(::operator new[](
                                                 dynamic_shared_bytes, std::align_val_t{128})));
  if (dynamic_shared_bytes > 0) std::memset(s.shared.get(), 0xff, dynamic_shared_bytes);
  s.warp_slots.assign((n + kWarpSize - 1) / kWarpSize, std::vector<uint64_t>(kWarpSize, 0));
  s.warp_memos.assign(s.warp_slots.size(), {});
  s.block_failure.clear();
  for (;;) {
    for (int k = 0; k < n; ++k) {
      const int i = s.reverse_block ? n - 1 - k : k;
      if (s.fibers[i].state != FiberState::kReady) continue;
      Resume(s.fibers[i]);
      if (!s.block_failure.empty()) return s.block_failure;
    }
    int done = 0, at_block = 0;
    for (int i = 0; i < n; ++i) {
      done += s.fibers[i].state == FiberState::kDone;
      at_block += s.fibers[i].state == FiberState::kAtBlockBarrier;
    }
    if (done == n) return "";
    bool released = false;
    std::string divergence = ReleaseWarps(&released);
    if (!divergence.empty()) return divergence;
    if (released) continue;
    if (at_block + done != n) Misuse("scheduler: a fiber is neither ready, waiting nor done");
    if (done > 0) {
      std::ostringstream o;
      o << "__syncthreads reached by " << at_block << " of " << n << " threads (the others have "
        << "exited): a hang or undefined behaviour on a device";
      return o.str();
    }
    for (int i = 0; i < n; ++i) {
      s.fibers[i].state = FiberState::kReady;
      s.fibers[i].memo_calls = 0;
    }
    for (auto& memo : s.warp_memos) memo.clear();
  }
}

// After a failed block: its fibers never return, so the redzones AddressSanitizer put on their
// stack frames stay; clear them before the stacks are reused.
void AbandonFibers() {
#if defined(KILN_EMULATION_ASAN)
  for (Fiber& f : S().fibers) __asan_unpoison_memory_region(f.stack.get(), kStackBytes);
#endif
}

void WaitAt(FiberState barrier) {
  Current().state = barrier;
  SwitchToScheduler(/*finished=*/false);
}

void RequireFullWarp(unsigned mask, const char* what) {
  Scheduler& s = S();
  const int n = static_cast<int>(s.block.x * s.block.y * s.block.z);
  const int w0 = Current().linear / kWarpSize * kWarpSize;
  if (mask != kFullMask) Fail(std::string(what) + " with a partial mask (not emulated)");
  if (w0 + kWarpSize > n) {
    Fail(std::string(what) + " with the full mask in a partial warp (a block of " +
         std::to_string(n) + " threads): undefined on a device");
  }
}

}  // namespace

void SetThreadOrder(ThreadOrder order) { S().order = order; }

namespace {

// Every block of one launch, in turn, on the calling host thread.
void RunGrid(dim3 grid, dim3 block, size_t dynamic_shared_bytes,
             const std::function<void()>& body) {
  Scheduler& s = S();
  if (!StickyFailure().empty() || !DeferredFailure().empty()) {
    return;  // a failed launch leaves the context unusable
  }
  s.grid = grid;
  s.block = block;
  s.body = &body;
  ++s.launches;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        s.block_index = uint3{x, y, z};
        const uint64_t linear = (uint64_t{z} * grid.y + y) * grid.x + x;
        s.reverse_block = s.order == ThreadOrder::kReverse ||
                          (s.order == ThreadOrder::kAlternate && (linear + s.launches) % 2 == 1);
        const std::string failure = RunBlock(dynamic_shared_bytes);
        if (!failure.empty()) {
          RecordStickyFailure("block " + Describe(s.block_index) + ": " + failure);
          AbandonFibers();
          s.body = nullptr;
          return;
        }
      }
    }
  }
  s.body = nullptr;
}

}  // namespace

void LaunchGrid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                cudaStream_t stream, std::function<void()> body) {
  if (S().current != nullptr) Misuse("a kernel launched from inside a kernel");
  const std::string refused = CheckLaunchConfiguration(kernel, grid, block, dynamic_shared_bytes);
  if (!refused.empty()) return;  // recorded as the launch's error, as cudaLaunchKernel would
  Enqueue(stream, [grid, block, dynamic_shared_bytes, body = std::move(body)] {
    RunGrid(grid, block, dynamic_shared_bytes, body);
  });
}

[[noreturn]] void Fail(const std::string& what) {
  Scheduler& s = S();
  Fiber& f = Current();
  s.block_failure = "thread " + Describe(f.index) + ": " + what;
  f.state = FiberState::kDone;
  SwitchToScheduler(/*finished=*/true);
  Misuse("a failed fiber was resumed");
}

const uint3& ThreadIndex() { return Current().index; }
const uint3& BlockIndex() { return S().block_index; }
const dim3& BlockDim() { return S().block; }
const dim3& GridDim() { return S().grid; }

unsigned char* DynamicShared() {
  Current();
  return S().shared.get();
}

int LaneId() { return Current().linear % kWarpSize; }

void SyncThreads() { WaitAt(FiberState::kAtBlockBarrier); }

void SyncWarp(unsigned mask) {
  RequireFullWarp(mask, "__syncwarp");
  WaitAt(FiberState::kAtWarpBarrier);
}

uint64_t ExchangeInWarp(unsigned mask, uint64_t bits, int source_lane) {
  RequireFullWarp(mask, "a warp shuffle");
  std::vector<uint64_t>& slots = S().warp_slots[Current().linear / kWarpSize];
  slots[LaneId()] = bits;
  WaitAt(FiberState::kAtWarpBarrier);  // every lane has deposited
  const uint64_t out = slots[source_lane];
  WaitAt(FiberState::kAtWarpBarrier);  // every lane has read before the slots are reused
  return out;
}

// Note [Emulated asynchronous copies]
// cp.async (__pipeline_memcpy_async) reads global memory at some point after it is issued and
// lands in shared memory no later than the wait that covers its group; only then may the issuing
// thread read it, and other threads only after a barrier that follows that wait. Here a copy reads
// its source when issued (the kernels' sources do not change during a launch) and writes its
// destination only when __pipeline_wait_prior completes its group, so a kernel that reads a tile
// before waiting for it, or waits for too few groups, sees the previous tile (or the 0xff fill)
// and fails its comparison with the CPU; a missing barrier after the wait shows up through the
// fiber orders of Note [Kernel emulation].
void AsyncCopy(void* dst, const void* src, size_t bytes, size_t zero_fill) {
  if (bytes != 4 && bytes != 8 && bytes != 16)
    Fail("cp.async of " + std::to_string(bytes) + " bytes");
  if (zero_fill > bytes) Fail("cp.async zero fill larger than the copy");
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 ||
      reinterpret_cast<uintptr_t>(src) % bytes != 0) {
    Fail("cp.async source or destination not aligned to its size");
  }
  PendingCopy copy;
  copy.dst = static_cast<unsigned char*>(dst);
  copy.bytes.assign(bytes, 0);
  std::memcpy(copy.bytes.data(), src, bytes - zero_fill);
  Current().open_copies.push_back(std::move(copy));
}

void AsyncCommit() {
  Fiber& f = Current();
  f.committed_copies.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

void AsyncWaitPrior(size_t groups) {
  Fiber& f = Current();
  while (f.committed_copies.size() > groups) {
    for (const PendingCopy& copy : f.committed_copies.front()) {
      std::memcpy(copy.dst, copy.bytes.data(), copy.bytes.size());
    }
    f.committed_copies.pop_front();
  }
}

// Note [Warp-uniform work]
// wmma operations are warp-collective and every lane holds the whole tile here, so an mma would
// be computed 32 times. Instead the first lane of a warp to make its n-th call since the warp's
// last barrier computes it and leaves operands and result in slot n; the other lanes, making the
// same call, check that their operands are the same (a wmma call with lane-dependent operands is
// a bug on a device) and take the result. Slots are dropped at every barrier of the warp.
std::vector<float>& WarpMemo(bool* fresh) {
  Scheduler& s = S();
  Fiber& f = Current();
  std::vector<std::vector<float>>& memo = s.warp_memos[f.linear / kWarpSize];
  const int slot = f.memo_calls++;
  *fresh = slot >= static_cast<int>(memo.size());
  if (*fresh) memo.emplace_back();
  return memo[slot];
}

}  // namespace kiln::kernels::cuda::emulation
