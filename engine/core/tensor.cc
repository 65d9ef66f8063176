// Tensor views and the generic strided CPU copy with dtype conversion.
#include "engine/core/tensor.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "engine/core/device_runtime.h"

namespace kiln {

Tensor Tensor::Make(Storage storage, int64_t offset, Shape sizes, Shape strides, DType dtype) {
  Tensor t;
  t.impl_ = std::make_shared<Impl>();
  t.impl_->storage = std::move(storage);
  t.impl_->offset = offset;
  t.impl_->numel = NumElements(sizes);
  t.impl_->sizes = std::move(sizes);
  t.impl_->strides = std::move(strides);
  t.impl_->dtype = dtype;
  return t;
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) KILN_CHECK_GE(d, 0) << "negative size in " << ShapeToString(shape);
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  return Make(Storage::Allocate(bytes, device), 0, shape, ContiguousStrides(shape), dtype);
}

Tensor Tensor::Full(const Shape& shape, float value, DType dtype) {
  Tensor t = Zeros(shape, dtype);
  t.Fill(value);
  return t;
}

Tensor Tensor::FromFloats(const std::vector<float>& values, const Shape& shape, DType dtype) {
  KILN_CHECK_EQ(static_cast<int64_t>(values.size()), NumElements(shape));
  Tensor src = Zeros(shape, DType::kF32);
  std::memcpy(src.raw_data(), values.data(), values.size() * sizeof(float));
  return dtype == DType::kF32 ? src : src.To(dtype);
}

Tensor Tensor::FromStorage(Storage storage, const Shape& shape, DType dtype,
                           int64_t element_offset) {
  const size_t end = static_cast<size_t>(element_offset + NumElements(shape)) * DTypeSize(dtype);
  KILN_CHECK_LE(end, storage.nbytes()) << "view " << ShapeToString(shape) << " past storage end";
  return Make(std::move(storage), element_offset, shape, ContiguousStrides(shape), dtype);
}

int64_t Tensor::size(int axis) const {
  const int a = NormalizeAxis(axis, dim());
  KILN_CHECK_GE(a, 0) << "axis " << axis << " out of range for " << TypeString();
  return impl_->sizes[a];
}

int64_t Tensor::stride(int axis) const {
  const int a = NormalizeAxis(axis, dim());
  KILN_CHECK_GE(a, 0) << "axis " << axis << " out of range for " << TypeString();
  return impl_->strides[a];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (impl_->sizes[i] != 1 && impl_->strides[i] != expected) return false;
    expected *= impl_->sizes[i];
  }
  return true;
}

Tensor Tensor::View(const Shape& shape) const {
  KILN_CHECK(is_contiguous()) << "View of a non-contiguous tensor " << TypeString();
  Shape resolved = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < static_cast<int>(resolved.size()); ++i) {
    if (resolved[i] == -1) {
      KILN_CHECK_EQ(infer, -1) << "View: more than one -1 in " << ShapeToString(shape);
      infer = i;
    } else {
      known *= resolved[i];
    }
  }
  if (infer >= 0) {
    KILN_CHECK(known > 0 && numel() % known == 0)
        << "View: cannot infer -1 in " << ShapeToString(shape) << " for " << TypeString();
    resolved[infer] = numel() / known;
  }
  KILN_CHECK_EQ(NumElements(resolved), numel())
      << "View " << ShapeToString(shape) << " of " << TypeString();
  return Make(impl_->storage, impl_->offset, resolved, ContiguousStrides(resolved), dtype());
}

Tensor Tensor::Transpose(int axis0, int axis1) const {
  const int a = NormalizeAxis(axis0, dim()), b = NormalizeAxis(axis1, dim());
  KILN_CHECK(a >= 0 && b >= 0) << "Transpose(" << axis0 << ", " << axis1 << ") of "
                               << TypeString();
  Shape sizes = impl_->sizes, strides = impl_->strides;
  std::swap(sizes[a], sizes[b]);
  std::swap(strides[a], strides[b]);
  return Make(impl_->storage, impl_->offset, sizes, strides, dtype());
}

Tensor Tensor::Slice(int axis, int64_t start, int64_t end) const {
  const int a = NormalizeAxis(axis, dim());
  KILN_CHECK(a >= 0 && 0 <= start && start <= end && end <= impl_->sizes[a])
      << "Slice(" << axis << ", " << start << ", " << end << ") of " << TypeString();
  Shape sizes = impl_->sizes;
  sizes[a] = end - start;
  return Make(impl_->storage, impl_->offset + start * impl_->strides[a], sizes, impl_->strides,
              dtype());
}

namespace {

// Reads element as float / writes float into element, for every dtype.
float LoadAsFloat(const void* p, DType d) {
  switch (d) {
    case DType::kF32: return *static_cast<const float*>(p);
    case DType::kBF16: return static_cast<float>(*static_cast<const BFloat16*>(p));
    case DType::kF16: return static_cast<float>(*static_cast<const Float16*>(p));
    case DType::kI32: return static_cast<float>(*static_cast<const int32_t*>(p));
    case DType::kI64: return static_cast<float>(*static_cast<const int64_t*>(p));
    case DType::kU8: return static_cast<float>(*static_cast<const uint8_t*>(p));
  }
  return 0;
}

void StoreFromFloat(void* p, DType d, float v) {
  switch (d) {
    case DType::kF32: *static_cast<float*>(p) = v; break;
    case DType::kBF16: *static_cast<BFloat16*>(p) = BFloat16(v); break;
    case DType::kF16: *static_cast<Float16*>(p) = Float16(v); break;
    case DType::kI32: *static_cast<int32_t*>(p) = static_cast<int32_t>(v); break;
    case DType::kI64: *static_cast<int64_t*>(p) = static_cast<int64_t>(v); break;
    case DType::kU8: *static_cast<uint8_t*>(p) = static_cast<uint8_t>(v); break;
  }
}

// Calls fn(dst_element_ptr, src_element_ptr) for every index of `sizes` in row-major order.
template <typename Fn>
void ForEachStrided(const Shape& sizes, const Shape& dst_strides, char* dst, size_t dst_elem,
                    const Shape& src_strides, const char* src, size_t src_elem, Fn&& fn) {
  const int rank = static_cast<int>(sizes.size());
  const int64_t n = NumElements(sizes);
  if (n == 0) return;
  Shape index(rank, 0);
  int64_t dst_off = 0, src_off = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(dst + dst_off * dst_elem, src + src_off * src_elem);
    for (int d = rank - 1; d >= 0; --d) {
      if (++index[d] < sizes[d]) {
        dst_off += dst_strides[d];
        src_off += src_strides[d];
        break;
      }
      dst_off -= dst_strides[d] * (sizes[d] - 1);
      src_off -= src_strides[d] * (sizes[d] - 1);
      index[d] = 0;
    }
  }
}

// The CPU strided copy with dtype conversion (both tensors on the CPU).
void CopyOnHost(const Tensor& dst, const Tensor& src) {
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    std::memmove(dst.raw_data(), src.raw_data(), dst.nbytes());
    return;
  }
  const DType dd = dst.dtype(), sd = src.dtype();
  ForEachStrided(dst.sizes(), dst.strides(), static_cast<char*>(dst.raw_data()),
                 dst.element_size(), src.strides(), static_cast<const char*>(src.raw_data()),
                 src.element_size(), [&](char* d, const char* s) {
                   if (dd == sd) {
                     std::memcpy(d, s, DTypeSize(dd));
                   } else if (dd == DType::kI64 && sd == DType::kI32) {
                     *reinterpret_cast<int64_t*>(d) = *reinterpret_cast<const int32_t*>(s);
                   } else if (dd == DType::kI32 && sd == DType::kI64) {
                     *reinterpret_cast<int32_t*>(d) =
                         static_cast<int32_t>(*reinterpret_cast<const int64_t*>(s));
                   } else {
                     StoreFromFloat(d, dd, LoadAsFloat(s, sd));
                   }
                 });
}

// Note [Device tensors through the host]
// Tensor's copies handle device tensors through the DeviceRuntime: a contiguous same-dtype copy is
// one runtime copy; anything else (strides, dtype conversion) stages the span of elements the view
// touches through host memory, runs the CPU strided copy there, and writes the span back. These
// are edge operations (IO, tests, setup), never part of a step.

// [first, last] element offsets (from the storage start) that a view touches.
std::pair<int64_t, int64_t> Span(const Tensor& t) {
  int64_t lo = t.offset(), hi = t.offset();
  for (int d = 0; d < t.dim(); ++d) {
    const int64_t reach = (t.size(d) - 1) * t.stride(d);
    if (reach > 0) hi += reach;
    if (reach < 0) lo += reach;
  }
  return {lo, hi};
}

// A CPU tensor holding a copy of the elements of device tensor t, with t's sizes and strides.
Tensor HostCopyOfSpan(const Tensor& t) {
  const auto [lo, hi] = Span(t);
  const size_t elem = t.element_size();
  const size_t bytes = t.numel() == 0 ? 0 : static_cast<size_t>(hi - lo + 1) * elem;
  Storage host = Storage::Allocate(bytes, Device::CPU());
  if (bytes > 0) {
    RuntimeFor(t.device())
        .Copy(host.data(), static_cast<const char*>(t.storage().data()) + lo * elem, bytes,
              t.device());
  }
  return Tensor::FromStorageStrided(host, t.offset() - lo, t.sizes(), t.strides(), t.dtype());
}

}  // namespace

Tensor Tensor::FromStorageStrided(Storage storage, int64_t element_offset, const Shape& sizes,
                                  const Shape& strides, DType dtype) {
  KILN_CHECK_EQ(sizes.size(), strides.size());
  return Make(std::move(storage), element_offset, sizes, strides, dtype);
}

void Tensor::CopyFrom(const Tensor& src) const {
  KILN_CHECK(sizes() == src.sizes()) << "CopyFrom " << src.TypeString() << " into " << TypeString();
  if (device().is_cpu() && src.device().is_cpu()) {
    CopyOnHost(*this, src);
    return;
  }
  if (numel() == 0) return;
  const Device ordering = device().is_cpu() ? src.device() : device();
  if (dtype() == src.dtype() && is_contiguous() && src.is_contiguous()) {
    RuntimeFor(ordering).Copy(raw_data(), src.raw_data(), nbytes(), ordering);
    return;
  }
  const Tensor host_src = src.device().is_cpu() ? src : HostCopyOfSpan(src);
  if (device().is_cpu()) {
    CopyOnHost(*this, host_src);
    return;
  }
  // Read-modify-write the destination's span so that elements between strided ones survive.
  const Tensor host_dst = HostCopyOfSpan(*this);
  CopyOnHost(host_dst, host_src);
  const auto [lo, hi] = Span(*this);
  const size_t elem = element_size();
  RuntimeFor(device()).Copy(static_cast<char*>(storage().data()) + lo * elem,
                            static_cast<const char*>(host_dst.storage().data()),
                            static_cast<size_t>(hi - lo + 1) * elem, device());
}

Tensor Tensor::Contiguous() const {
  if (is_contiguous()) return *this;
  return Clone();
}

Tensor Tensor::Clone() const {
  Tensor out = Zeros(sizes(), dtype(), device());
  out.CopyFrom(*this);
  return out;
}

Tensor Tensor::To(DType target) const {
  Tensor out = Zeros(sizes(), target, device());
  out.CopyFrom(*this);
  return out;
}

void Tensor::Fill(float value) const {
  if (value == 0.0f && !std::signbit(value) && is_contiguous()) {  // +0.0: zero bytes in every dtype
    if (device().is_cpu()) {
      std::memset(raw_data(), 0, nbytes());
    } else {
      RuntimeFor(device()).Memset(raw_data(), 0, nbytes(), device());
    }
    return;
  }
  if (!device().is_cpu()) {
    const Tensor host = Zeros(sizes(), dtype());
    host.Fill(value);
    CopyFrom(host);
    return;
  }
  char element[8];
  StoreFromFloat(element, dtype(), value);
  const Shape zero_strides(dim(), 0);
  ForEachStrided(sizes(), strides(), static_cast<char*>(raw_data()), element_size(), zero_strides,
                 element, 0, [&](char* d, const char* s) { std::memcpy(d, s, element_size()); });
}

std::vector<float> Tensor::ToFloats() const {
  if (!device().is_cpu()) {
    return numel() == 0 ? std::vector<float>() : HostCopyOfSpan(*this).ToFloats();
  }
  std::vector<float> out(static_cast<size_t>(numel()));
  const Shape out_strides = ContiguousStrides(sizes());
  const DType sd = dtype();
  ForEachStrided(sizes(), out_strides, reinterpret_cast<char*>(out.data()), sizeof(float),
                 strides(), static_cast<const char*>(raw_data()), element_size(),
                 [&](char* d, const char* s) { *reinterpret_cast<float*>(d) = LoadAsFloat(s, sd); });
  return out;
}

float Tensor::Item() const {
  KILN_CHECK_EQ(numel(), 1) << "Item() of " << TypeString();
  return ToFloats()[0];
}

std::string Tensor::TypeString() const {
  if (!defined()) return "undefined";
  return std::string(DTypeName(dtype())) + ShapeToString(sizes());
}

std::string Tensor::ToString(int max_elements) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << TypeString() << ", " << device() << ": ";
  {
    const std::vector<float> v = ToFloats();
    for (int i = 0; i < static_cast<int>(v.size()) && i < max_elements; ++i) {
      os << (i ? ", " : "") << v[i];
    }
    if (static_cast<int>(v.size()) > max_elements) os << ", ...";
  }
  os << ")";
  return os.str();
}

}  // namespace kiln
