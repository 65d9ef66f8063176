// Storage: owned or wrapped device memory.
#include "engine/core/storage.h"

#include <cstring>

#include "engine/core/device_runtime.h"
#include "engine/core/status.h"

namespace kiln {

Storage::Impl::~Impl() {
  if (allocator != nullptr) allocator->Deallocate(data, nbytes);
}

Storage Storage::Allocate(size_t bytes, Device device) {
  Allocator* allocator = GetAllocator(device);
  KILN_CHECK(allocator != nullptr) << "no allocator registered for " << device;
  Storage s;
  s.impl_ = std::make_shared<Impl>();
  s.impl_->data = allocator->Allocate(bytes);
  KILN_CHECK(s.impl_->data != nullptr) << "out of memory allocating " << bytes << " bytes on "
                                       << device;
  s.impl_->nbytes = bytes;
  s.impl_->device = device;
  s.impl_->allocator = allocator;
  if (device.is_cpu()) {
    std::memset(s.impl_->data, 0, bytes);
  } else if (bytes > 0) {
    RuntimeFor(device).Memset(s.impl_->data, 0, bytes, device);
  }
  return s;
}

Storage Storage::AllocatePinnedHost(size_t bytes) {
  Allocator* allocator = GetPinnedHostAllocator();
  Storage s;
  s.impl_ = std::make_shared<Impl>();
  s.impl_->data = allocator->Allocate(bytes);
  KILN_CHECK(s.impl_->data != nullptr) << "out of pinned host memory allocating " << bytes
                                       << " bytes";
  s.impl_->nbytes = bytes;
  s.impl_->device = Device::CPU();
  s.impl_->allocator = allocator;
  std::memset(s.impl_->data, 0, bytes);
  return s;
}

Storage Storage::Wrap(void* data, size_t bytes, Device device,
                      std::shared_ptr<const void> keep_alive) {
  Storage s;
  s.impl_ = std::make_shared<Impl>();
  s.impl_->data = data;
  s.impl_->nbytes = bytes;
  s.impl_->device = device;
  s.impl_->keep_alive = std::move(keep_alive);
  return s;
}

}  // namespace kiln
