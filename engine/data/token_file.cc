// Token file mapping, validation and writing.
#include "engine/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace kiln::data {

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(const std::string& path,
                                                           int vocab_size) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open token file ", path, ": ",
                                            std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<TokenFile> f(new TokenFile());
  f->path_ = path;
  f->map_bytes_ = static_cast<size_t>(st.st_size);
  if (f->map_bytes_ > 0) {
    f->map_ = mmap(nullptr, f->map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    return absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(errno)));
  }
  const size_t header_bytes = kLlmcHeaderInts * sizeof(int32_t);
  const auto* header = static_cast<const int32_t*>(f->map_);
  if (f->map_bytes_ >= header_bytes && header[0] == kLlmcMagic) {
    const int32_t version = header[1];
    if (version != 1 && version != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": llm.c header version ", version, " is not 1 (uint16) or 2 (uint32)"));
    }
    f->wide_ = version == 2;
    f->num_tokens_ = static_cast<uint32_t>(header[2]);
    const size_t need = header_bytes + static_cast<size_t>(f->num_tokens_) * (f->wide_ ? 4 : 2);
    if (f->map_bytes_ < need) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": header promises ", f->num_tokens_,
                                                     " tokens (", need, " bytes) but the file has ",
                                                     f->map_bytes_, " bytes"));
    }
    f->tokens_ = static_cast<const char*>(f->map_) + header_bytes;
  } else {
    if (f->map_bytes_ % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": no llm.c header and an odd size (", f->map_bytes_,
          " bytes), so not raw uint16 tokens either"));
    }
    f->num_tokens_ = static_cast<int64_t>(f->map_bytes_ / 2);
    f->tokens_ = f->map_;
  }
  if (f->num_tokens_ < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": holds ", f->num_tokens_, " tokens; need at least 2"));
  }
  if (vocab_size > 0) {
    for (int64_t i = 0; i < f->num_tokens_; ++i) {
      const uint32_t t = (*f)[i];
      if (t >= static_cast<uint32_t>(vocab_size)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": token ", t, " at offset ", i,
                                                       " is not below model.vocab_size ",
                                                       vocab_size));
      }
    }
  }
  return f;
}

TokenFile::~TokenFile() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

void TokenFile::Read(int64_t begin, int64_t n, int32_t* out) const {
  KILN_CHECK(begin >= 0 && begin + n <= num_tokens_) << begin << "+" << n << " of " << num_tokens_;
  if (wide_) {
    const uint32_t* t = static_cast<const uint32_t*>(tokens_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i]);
  } else {
    const uint16_t* t = static_cast<const uint16_t*>(tokens_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = t[i];
  }
}

absl::Status WriteTokenFile(const std::string& path, const std::vector<uint32_t>& tokens) {
  bool wide = false;
  for (uint32_t t : tokens) wide = wide || t > 0xffff;
  if (tokens.size() > 0x7fffffffu) {
    return absl::InvalidArgumentError(absl::StrCat("too many tokens for one file: ", tokens.size()));
  }
  std::vector<int32_t> header(kLlmcHeaderInts, 0);
  header[0] = kLlmcMagic;
  header[1] = wide ? 2 : 1;
  header[2] = static_cast<int32_t>(tokens.size());
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  bool ok = std::fwrite(header.data(), sizeof(int32_t), header.size(), f) == header.size();
  if (wide) {
    ok = ok && std::fwrite(tokens.data(), 4, tokens.size(), f) == tokens.size();
  } else {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    ok = ok && std::fwrite(narrow.data(), 2, narrow.size(), f) == narrow.size();
  }
  ok = (std::fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::ResourceExhaustedError(absl::StrCat("writing ", path, " failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace kiln::data
