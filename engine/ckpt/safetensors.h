// Safetensors files: an 8-byte little-endian header length, a JSON header mapping each tensor name
// to its dtype, shape and byte range, then the raw data. Reading maps the file; writing is atomic
// (temporary file, fsync, rename) so a crash leaves either the old file or the new one.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace kiln::ckpt {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;  // into the mapped file
  size_t bytes = 0;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const SafetensorsEntry* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  // The tensor converted to f32 (a copy).
  Tensor ReadAsF32(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (contiguous CPU tensors) under their names, sorted, with string metadata.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace kiln::ckpt
