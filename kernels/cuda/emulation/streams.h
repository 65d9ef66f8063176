// Streams and events of the kernel emulation: immediate (every call done when it returns, the
// default) or deferred (work queued per stream and run only when something waits for it). Internal
// to the emulation; see Note [Deferred streams].
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>

namespace kiln::kernels::cuda::emulation {

// Note [Deferred streams]
// With KILN_EMULATED_STREAMS=deferred (tests ask for it with UseDeferredStreams before the
// runtime starts), kernels, copies, memsets, matmuls and NCCL calls are queued on their stream and
// run later, in stream order, by whichever host thread first needs them: cudaStreamSynchronize,
// cudaEventSynchronize / cudaEventQuery (up to the event), cudaDeviceSynchronize and cudaFree (all
// streams), or a stream that waits on an event of another (cudaStreamWaitEvent: when the waiting
// stream reaches that point it first runs the other up to the event as it was recorded). Host
// memory is read and written when the work runs, not when it is issued. So a program that reads a
// result before waiting for it, reuses a staging buffer while a copy from it is queued, or orders
// two streams without an event computes wrong numbers here, as it could on a GPU — where the same
// bug may only show under load. Failures inside deferred work are reported by the next
// synchronizing call and cudaGetLastError on every thread (a device fault breaks the context).

// True when work is deferred (KILN_EMULATED_STREAMS=deferred, read once, or SetDeferredStreams).
bool DeferredStreams();
// Switches the mode (tests of the emulation itself); drains every stream first.
void SetDeferredStreams(bool deferred);

// Runs `work` on `stream` (null: the current device's default stream): at once, or queued.
void Enqueue(cudaStream_t stream, std::function<void()> work);

cudaStream_t CreateStream();
void DestroyStream(cudaStream_t stream);  // runs its queued work first
void DrainStream(cudaStream_t stream);
void DrainAllStreams();

cudaEvent_t CreateEvent();
void DestroyEvent(cudaEvent_t event);
void RecordEvent(cudaEvent_t event, cudaStream_t stream);
void DrainEvent(cudaEvent_t event);  // runs the event's stream up to where it was recorded
void StreamWaitEvent(cudaStream_t stream, cudaEvent_t event);

// Stream capture (CUDA graphs; Note [Device graphs] in engine/core/device_runtime.h): while a
// stream captures, work enqueued on it is recorded instead of run. The capturing thread's calls
// that cannot be recorded (allocation, frees, waits, events) invalidate the capture and fail with
// cudaErrorStreamCaptureUnsupported (thread-local capture mode); EndCapture then fails with
// cudaErrorStreamCaptureInvalidated and nothing recorded runs. A launched graph enqueues copies of
// the recorded work, with the arguments it was recorded with.
cudaError_t BeginCapture(cudaStream_t stream);
cudaError_t EndCapture(cudaStream_t stream, cudaGraph_t* graph);
// cudaSuccess, or cudaErrorStreamCaptureUnsupported (invalidating the capture) when the calling
// thread is capturing; `what` names the call for the failure message.
cudaError_t CheckNotCapturing(const char* what);
cudaGraphExec_t InstantiateGraph(cudaGraph_t graph);
void LaunchGraph(cudaGraphExec_t exec, cudaStream_t stream);
void DestroyGraph(cudaGraph_t graph);
void DestroyGraphExec(cudaGraphExec_t exec);

// A failure inside deferred work, for every thread ("" when none); ClearFailure clears it.
void RecordDeferredFailure(const std::string& what);
std::string DeferredFailure();
void ClearDeferredFailure();
// What a synchronizing call returns: cudaSuccess, or cudaErrorLaunchFailure after such a failure.
cudaError_t DeferredStatus();

}  // namespace kiln::kernels::cuda::emulation
