// The device runtime: what the CPU-only core needs from a GPU backend (availability with the
// driver's own words, copies between host and device, memset, synchronization, streams and events
// as opaque handles). kernels/cuda registers the CUDA implementation at start-up; engine/core stays
// free of CUDA headers. See Note [Device runtime ordering].
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "engine/core/device.h"

namespace kiln {

// Note [Device runtime ordering]
// Every device has one compute stream: kernels launch on it and Copy/Memset are ordered on it, so
// work issued from the host thread runs in issue order without explicit synchronization. Copy and
// Memset return when host memory involved may be reused or read (a copy into or out of host memory
// waits for the stream; a device-to-device copy or a memset returns at once). Other streams (the
// communicator's) order themselves against the compute stream with events.

// Note [Pinned staging]
// Values the host makes every step (a token batch, the loss seed) reach the device through
// page-locked host buffers (Storage::AllocatePinnedHost; CUDA's cudaHostAlloc once a device is
// present) copied with CopyAsync: the copy is ordered before the kernels that read it on the
// compute stream, and the host does not wait for the compute. A staging buffer is reused, so
// before the host writes it again it waits for an event recorded after the previous copy out of
// it (engine/train/staged_upload.h). Results read back the same way wait for one event.

using StreamHandle = void*;  // null: the device's compute stream
using EventHandle = void*;
using GraphHandle = void*;

// Note [Device graphs]
// A step's kernels can be recorded once into a device graph (CUDA graphs) and replayed with one
// launch per step, so that the host's per-kernel launch cost no longer paces the device. What is
// recorded is fixed: kernels, their arguments (addresses included) and copies. Recording works
// for work that only enqueues onto the compute stream from the recording thread: no allocation,
// no wait for the device, no host callback that talks to other threads (the executor runs nodes
// with host-side work, and the grad-ready callbacks, between recorded segments: Note [Graph
// segments] in engine/graph/executor.cc). Values that change per step (batches, seeds, the loss
// seed) live in device buffers at fixed addresses, uploaded before each replay.

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;

  // OK when at least one device can be used; otherwise the driver's reason (e.g. "CUDA driver
  // version is insufficient for CUDA runtime version"). Cached after the first call.
  virtual absl::Status Available() = 0;
  virtual int DeviceCount() = 0;
  // "NVIDIA H200" (empty when unavailable).
  virtual std::string DeviceName(int index) = 0;

  // Copies `bytes` between any two of host memory and device memory (Note [Device runtime
  // ordering]). `device` is the device whose compute stream orders the copy.
  virtual void Copy(void* dst, const void* src, size_t bytes, Device device) = 0;
  // Enqueues the copy on `device`'s compute stream and returns at once, even when host memory is
  // involved (Note [Pinned staging]): the host side must stay unmodified (host to device) or
  // unread (device to host) until an event recorded on the compute stream after this call has
  // completed.
  virtual void CopyAsync(void* dst, const void* src, size_t bytes, Device device) = 0;
  virtual void Memset(void* dst, int value, size_t bytes, Device device) = 0;
  // Waits for everything issued to `device` (all of its streams).
  virtual void Synchronize(Device device) = 0;

  virtual StreamHandle ComputeStream(Device device) = 0;
  virtual StreamHandle CreateStream(Device device) = 0;
  virtual void DestroyStream(Device device, StreamHandle stream) = 0;
  virtual void SynchronizeStream(Device device, StreamHandle stream) = 0;
  virtual EventHandle CreateEvent(Device device) = 0;
  virtual void DestroyEvent(Device device, EventHandle event) = 0;
  // The event completes when the work issued to `stream` so far has completed.
  virtual void RecordEvent(Device device, EventHandle event, StreamHandle stream) = 0;
  // Work issued to `stream` after this call waits for `event` (no host wait).
  virtual void StreamWaitEvent(Device device, StreamHandle stream, EventHandle event) = 0;
  virtual bool EventDone(Device device, EventHandle event) = 0;
  virtual void SynchronizeEvent(Device device, EventHandle event) = 0;

  // Note [Device graphs]. Starts recording what this thread issues to `device`'s compute stream
  // (nothing runs until the graph is launched); false when the backend has no graphs.
  virtual bool BeginCapture(Device /*device*/) { return false; }
  // Ends the recording and returns the graph ready to launch, or null with the reason in `why`
  // (something that cannot be recorded was issued; none of the recorded work has run).
  virtual GraphHandle EndCapture(Device /*device*/, std::string* why) {
    *why = "this device has no graphs";
    return nullptr;
  }
  // Enqueues one replay of `graph` on the compute stream.
  virtual void LaunchGraph(Device /*device*/, GraphHandle /*graph*/) {}
  virtual void DestroyGraph(Device /*device*/, GraphHandle /*graph*/) {}
};

// Registered by a backend's static initializer; the runtime lives for the whole process.
void RegisterDeviceRuntime(DeviceType type, DeviceRuntime* runtime);
// The runtime for `type`, or null when no backend for it is linked.
DeviceRuntime* GetDeviceRuntime(DeviceType type);

// OK for the CPU. For a GPU device: FailedPrecondition "no CUDA device available: <reason>" when
// no backend is linked, the binary was built without CUDA, the driver refuses, or the index is
// out of range. Callers that must fail fast before any work (kiln-train) call this first.
absl::Status CheckDeviceAvailable(Device device);

// The runtime of a device that must exist (aborts otherwise): for code that already holds memory
// on that device.
DeviceRuntime& RuntimeFor(Device device);

}  // namespace kiln
