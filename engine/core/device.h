// Where a tensor lives: the CPU or one CUDA device.
#pragma once

#include <ostream>
#include <string>

#include "absl/status/statusor.h"

namespace kiln {

enum class DeviceType : uint8_t { kCPU, kCUDA };
constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device CPU() { return {DeviceType::kCPU, 0}; }
  static Device CUDA(int index = 0) { return {DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string ToString() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:1".
absl::StatusOr<Device> ParseDevice(const std::string& text);

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.ToString(); }

}  // namespace kiln
