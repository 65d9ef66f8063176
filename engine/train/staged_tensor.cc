// StagedTensor: page-locked host twins of device values, copied asynchronously on the compute
// stream and guarded by one event (Note [Pinned staging]).
#include "engine/train/staged_tensor.h"

#include <cstring>

#include "engine/core/device_runtime.h"
#include "engine/core/status.h"

namespace kiln::train {

StagedTensor::StagedTensor(const Tensor& value) : value_(value) {
  KILN_CHECK(value.defined() && value.is_contiguous()) << "StagedTensor of a non-contiguous value";
  if (value.device().is_cpu()) {
    host_ = Tensor::Zeros(value.sizes(), value.dtype());
    return;
  }
  host_ = Tensor::FromStorage(Storage::AllocatePinnedHost(value.nbytes()), value.sizes(),
                              value.dtype());
  event_ = RuntimeFor(value.device()).CreateEvent(value.device());
}

StagedTensor::~StagedTensor() {
  if (value_.device().is_cpu()) return;
  // The pinned buffer is freed with this object: no copy may still be using it.
  DeviceRuntime& rt = RuntimeFor(value_.device());
  if (pending_) rt.SynchronizeEvent(value_.device(), event_);
  rt.DestroyEvent(value_.device(), event_);
}

const Tensor& StagedTensor::Host() {
  if (pending_) {
    RuntimeFor(value_.device()).SynchronizeEvent(value_.device(), event_);
    pending_ = false;
  }
  return host_;
}

void StagedTensor::Upload() {
  if (value_.device().is_cpu()) {
    std::memcpy(value_.raw_data(), host_.raw_data(), value_.nbytes());
    return;
  }
  RuntimeFor(value_.device())
      .CopyAsync(value_.raw_data(), host_.raw_data(), value_.nbytes(), value_.device());
  Issued();
}

void StagedTensor::Download() {
  if (value_.device().is_cpu()) {
    std::memcpy(host_.raw_data(), value_.raw_data(), value_.nbytes());
    return;
  }
  RuntimeFor(value_.device())
      .CopyAsync(host_.raw_data(), value_.raw_data(), value_.nbytes(), value_.device());
  Issued();
}

void StagedTensor::Issued() {
  RuntimeFor(value_.device()).RecordEvent(value_.device(), event_, nullptr);  // compute stream
  pending_ = true;
}

}  // namespace kiln::train
