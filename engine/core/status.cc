// Implementation of the check-failure path: print and abort.
#include "engine/core/status.h"

#include <execinfo.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace kiln::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  stream_ << file << ":" << line << ": check failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "%s\n", stream_.str().c_str());
  // The call stack, for the bug report (symbolize with addr2line -e <binary> or gdb).
  void* frames[48];
  const int n = backtrace(frames, 48);
  std::fprintf(stderr, "stack:\n");
  std::fflush(stderr);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  std::abort();
}

}  // namespace kiln::internal
