// Positional reads of rank log files.
#include "scheduler/log_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kiln::scheduler {

std::string RankLogPath(const std::string& log_dir, int rank) {
  return absl::StrCat(log_dir, "/rank-", rank, ".log");
}

absl::StatusOr<std::string> ReadLogChunk(const std::string& path, int64_t offset, int max_bytes,
                                         bool whole_lines) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return absl::UnavailableError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string data(static_cast<size_t>(max_bytes), '\0');
  const ssize_t n = pread(fd, data.data(), data.size(), offset);
  const int read_errno = errno;
  close(fd);
  if (n < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(read_errno)));
  }
  data.resize(static_cast<size_t>(n));
  if (whole_lines && !data.empty() && data.back() != '\n') {
    const size_t last = data.rfind('\n');
    if (last != std::string::npos) {
      data.resize(last + 1);
    } else if (static_cast<int>(data.size()) < max_bytes) {
      data.clear();  // a partial line still being written: wait for the rest
    }
  }
  return data;
}

}  // namespace kiln::scheduler
