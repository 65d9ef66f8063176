// A ref-counted block of device memory that tensors view. It either owns its bytes (allocated from
// the device's Allocator) or wraps memory owned elsewhere (an executor arena, an mmap'd file), in
// which case an optional keep-alive handle pins the owner.
#pragma once

#include <cstddef>
#include <memory>

#include "engine/core/allocator.h"
#include "engine/core/device.h"

namespace kiln {

class Storage {
 public:
  Storage() = default;

  // Allocates `bytes` on `device`, zero-filled (on a device through its DeviceRuntime). Aborts
  // when the device has no allocator or is out of memory: callers that can recover check
  // Allocator::Allocate themselves.
  static Storage Allocate(size_t bytes, Device device);
  // `bytes` of zero-filled page-locked host memory from GetPinnedHostAllocator() (device CPU), for
  // asynchronous copies to and from a device (Note [Pinned staging]).
  static Storage AllocatePinnedHost(size_t bytes);
  // Wraps memory that something else owns; `keep_alive` (may be null) is held while any view lives.
  static Storage Wrap(void* data, size_t bytes, Device device,
                      std::shared_ptr<const void> keep_alive = nullptr);

  bool defined() const { return impl_ != nullptr; }
  void* data() const { return impl_ ? impl_->data : nullptr; }
  size_t nbytes() const { return impl_ ? impl_->nbytes : 0; }
  Device device() const { return impl_ ? impl_->device : Device::CPU(); }
  bool owns_memory() const { return impl_ && impl_->allocator != nullptr; }

 private:
  struct Impl {
    void* data = nullptr;
    size_t nbytes = 0;
    Device device;
    Allocator* allocator = nullptr;  // null: not owned
    std::shared_ptr<const void> keep_alive;
    ~Impl();
  };
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln
