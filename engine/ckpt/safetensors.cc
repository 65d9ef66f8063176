// Safetensors parsing and atomic writing.
#include "engine/ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kiln::ckpt {
namespace {

absl::StatusOr<DType> ParseSafetensorsDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  if (s == "U8") return DType::kU8;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", s));
}

const char* SafetensorsDTypeName(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return "?";
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  fstat(fd, &st);
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_bytes_ = static_cast<size_t>(st.st_size);
  if (f->map_bytes_ < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": too short for a safetensors file (",
                                                   f->map_bytes_, " bytes)"));
  }
  f->map_ = mmap(nullptr, f->map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    return absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(errno)));
  }
  uint64_t header_len;
  std::memcpy(&header_len, f->map_, 8);
  if (header_len > f->map_bytes_ - 8 || header_len > (100u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " does not fit the file (", f->map_bytes_,
                                                   " bytes): not a safetensors file?"));
  }
  const char* header = static_cast<const char*>(f->map_) + 8;
  const char* data = header + header_len;
  const size_t data_bytes = f->map_bytes_ - 8 - header_len;
  nlohmann::json j = nlohmann::json::parse(header, header + header_len, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the header is not a JSON object"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object()) {
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (m->is_string()) f->metadata_[m.key()] = m->get<std::string>();
        }
      }
      continue;
    }
    const nlohmann::json& e = *it;
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets") || !e["dtype"].is_string() || !e["shape"].is_array() ||
        !e["data_offsets"].is_array() || e["data_offsets"].size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": malformed entry for tensor ", it.key()));
    }
    SafetensorsEntry entry;
    entry.name = it.key();
    auto dtype = ParseSafetensorsDType(e["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", entry.name, ": ",
                                                     dtype.status().message()));
    }
    entry.dtype = *dtype;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", entry.name,
                                                       " has an invalid shape"));
      }
      entry.shape.push_back(d.get<int64_t>());
    }
    const uint64_t begin = e["data_offsets"][0].get<uint64_t>();
    const uint64_t end = e["data_offsets"][1].get<uint64_t>();
    entry.bytes = static_cast<size_t>(NumElements(entry.shape)) * DTypeSize(entry.dtype);
    if (begin > end || end > data_bytes || end - begin != entry.bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", entry.name, " has byte range [", begin, ", ", end,
          ") which does not match its shape ", ShapeToString(entry.shape), " or the file size"));
    }
    entry.data = data + begin;
    f->entries_.push_back(std::move(entry));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

Tensor SafetensorsFile::ReadAsF32(const SafetensorsEntry& entry) const {
  Tensor raw = Tensor::Zeros(entry.shape, entry.dtype);
  std::memcpy(raw.raw_data(), entry.data, entry.bytes);
  return entry.dtype == DType::kF32 ? raw : raw.To(DType::kF32);
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp, ": ",
                                                    std::strerror(errno)));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::ResourceExhaustedError(absl::StrCat("writing ", path, " failed: ",
                                                       std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::ResourceExhaustedError(absl::StrCat("fsync of ", path, " failed: ",
                                                     std::strerror(err)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("rename to ", path, " failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const std::pair<std::string, Tensor>*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto* t : sorted) {
    const Tensor& x = t->second;
    nlohmann::json e;
    e["dtype"] = SafetensorsDTypeName(x.dtype());
    e["shape"] = std::vector<int64_t>(x.sizes().begin(), x.sizes().end());
    e["data_offsets"] = {offset, offset + x.nbytes()};
    header[t->first] = e;
    offset += x.nbytes();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::string bytes;
  bytes.reserve(8 + text.size() + offset);
  const uint64_t len = text.size();
  bytes.append(reinterpret_cast<const char*>(&len), 8);
  bytes.append(text);
  for (const auto* t : sorted) {
    const Tensor c = t->second.Contiguous();
    bytes.append(static_cast<const char*>(c.raw_data()), c.nbytes());
  }
  return WriteFileAtomically(path, bytes);
}

}  // namespace kiln::ckpt
