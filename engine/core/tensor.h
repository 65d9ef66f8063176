// Tensor: a cheap, copyable handle to a ref-counted TensorImpl (storage, element offset, sizes,
// strides, dtype). Views — View/Transpose/Slice — share storage; nothing here launches compute
// except the generic strided copy used by tests, IO and casts at the edges.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/core/shape.h"
#include "engine/core/status.h"
#include "engine/core/storage.h"

namespace kiln {

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // New contiguous tensors, zero-filled (on a device through its DeviceRuntime).
  static Tensor Zeros(const Shape& shape, DType dtype, Device device = Device::CPU());
  static Tensor Full(const Shape& shape, float value, DType dtype);
  // A contiguous CPU tensor holding `values` converted to `dtype`.
  static Tensor FromFloats(const std::vector<float>& values, const Shape& shape,
                           DType dtype = DType::kF32);
  template <typename T>
  static Tensor FromVector(const std::vector<T>& values, const Shape& shape);
  // A view over memory owned elsewhere (`storage` may be larger than the tensor).
  static Tensor FromStorage(Storage storage, const Shape& shape, DType dtype,
                            int64_t element_offset = 0);
  // A view with explicit strides (the caller keeps it inside the storage).
  static Tensor FromStorageStrided(Storage storage, int64_t element_offset, const Shape& sizes,
                                   const Shape& strides, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl_->sizes; }
  const Shape& strides() const { return impl_->strides; }
  int dim() const { return static_cast<int>(impl_->sizes.size()); }
  int64_t size(int axis) const;  // negative axis counts from the end
  int64_t stride(int axis) const;
  int64_t numel() const { return impl_->numel; }
  DType dtype() const { return impl_->dtype; }
  size_t element_size() const { return DTypeSize(impl_->dtype); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  Device device() const { return impl_->storage.device(); }
  int64_t offset() const { return impl_->offset; }
  const Storage& storage() const { return impl_->storage; }
  bool is_contiguous() const;

  // Pointer to the first element.
  void* raw_data() const {
    return static_cast<char*>(impl_->storage.data()) + impl_->offset * element_size();
  }
  template <typename T>
  T* data() const {
    KILN_CHECK(dtype() == DTypeOf<T>::value)
        << "tensor holds " << dtype() << ", accessed as " << DTypeName(DTypeOf<T>::value);
    return static_cast<T*>(raw_data());
  }

  // Views sharing storage. View needs a contiguous tensor; one size may be -1.
  Tensor View(const Shape& shape) const;
  Tensor Transpose(int axis0, int axis1) const;
  Tensor Slice(int axis, int64_t start, int64_t end) const;

  // Copies on the tensor's device: Contiguous returns *this when already contiguous. Device
  // tensors go through the DeviceRuntime (Note [Device tensors through the host] in tensor.cc).
  Tensor Contiguous() const;
  Tensor Clone() const;
  Tensor To(DType dtype) const;
  // Element-wise copy from a tensor of the same shape, converting dtype; any strides on either side.
  // Like Fill, const: it writes the elements, not the handle (a Tensor is a reference).
  void CopyFrom(const Tensor& src) const;
  void Fill(float value) const;

  std::vector<float> ToFloats() const;  // every element in row-major order, as float (any device)
  float Item() const;                   // the single element of a 1-element tensor
  std::string ToString(int max_elements = 16) const;
  // "f32[2, 3]"
  std::string TypeString() const;

 private:
  struct Impl {
    Storage storage;
    int64_t offset = 0;  // in elements
    Shape sizes;
    Shape strides;
    int64_t numel = 0;
    DType dtype = DType::kF32;
  };
  static Tensor Make(Storage storage, int64_t offset, Shape sizes, Shape strides, DType dtype);
  std::shared_ptr<Impl> impl_;
};

template <typename T>
Tensor Tensor::FromVector(const std::vector<T>& values, const Shape& shape) {
  KILN_CHECK_EQ(static_cast<int64_t>(values.size()), NumElements(shape));
  Tensor t = Zeros(shape, DTypeOf<T>::value);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

}  // namespace kiln
