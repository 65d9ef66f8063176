// The global kernel registry.
#include "engine/core/kernel.h"

#include <algorithm>

namespace kiln {

KernelRegistry& KernelRegistry::Global() {
  static KernelRegistry* registry = new KernelRegistry();
  return *registry;
}

void KernelRegistry::Register(std::string_view op, DeviceType device, DType dtype,
                              KernelFactory factory) {
  KILN_CHECK(Find(op, device, dtype) == nullptr)
      << "kernel registered twice: " << op << " " << DTypeName(dtype);
  entries_.push_back(Entry{std::string(op), device, dtype, factory});
}

KernelFactory KernelRegistry::Find(std::string_view op, DeviceType device, DType dtype) const {
  for (const Entry& e : entries_) {
    if (e.device == device && e.dtype == dtype && e.op == op) return e.factory;
  }
  return nullptr;
}

std::vector<DType> KernelRegistry::DTypesFor(std::string_view op, DeviceType device) const {
  std::vector<DType> out;
  for (const Entry& e : entries_) {
    if (e.device == device && e.op == op) out.push_back(e.dtype);
  }
  return out;
}

std::vector<std::string> KernelRegistry::OpsOn(DeviceType device) const {
  std::vector<std::string> out;
  for (const Entry& e : entries_) {
    if (e.device == device) out.push_back(e.op);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace kiln
