// StagedTensor: the host twin of one executor value — the buffer a step's host-made input (token
// batch, loss seed, RNG seed) is written into before it goes to the device, or a result (the
// loss) lands in after it comes back — with copies that do not wait for the device's compute
// (Note [Pinned staging] in engine/core/device_runtime.h).
#pragma once

#include "engine/core/tensor.h"

namespace kiln::train {

class StagedTensor {
 public:
  // value: a contiguous executor value on any device. On a GPU the twin is page-locked host
  // memory and copies are asynchronous on the compute stream; on the CPU it is plain memory and
  // copies are memcpy.
  explicit StagedTensor(const Tensor& value);
  ~StagedTensor();
  StagedTensor(const StagedTensor&) = delete;
  StagedTensor& operator=(const StagedTensor&) = delete;

  // The host buffer (value's sizes and dtype) to write or read: first waits until the last copy
  // into or out of it has completed, so an upload still in flight is never overwritten and a
  // download is never read early. Waits for nothing when that copy is already done.
  const Tensor& Host();
  // value <- host buffer, ordered before the kernels the host issues next.
  void Upload();
  // host buffer <- value, ordered after the kernels the host issued before; read it with Host().
  void Download();

 private:
  void Issued();  // records the event after a copy

  Tensor value_;           // on the device (or the CPU)
  Tensor host_;            // same sizes and dtype; page-locked when value_ is on a GPU
  void* event_ = nullptr;  // EventHandle, GPU only
  bool pending_ = false;   // a copy was issued since the last wait
};

}  // namespace kiln::train
