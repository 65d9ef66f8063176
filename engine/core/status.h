// Error handling for the whole engine: absl::Status for anything input can cause, KILN_CHECK for
// broken API contracts (programming errors abort with file and line), and the propagation macros.
// See Note [Status vs CHECK].
#pragma once

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Note [Status vs CHECK]
// A condition that a user, a config file, a disk or a peer can violate returns absl::Status (or
// StatusOr) and the caller decides. A condition that only a bug in Kiln can violate (an index out of
// range inside a kernel, a plan that binds the wrong dtype) is a KILN_CHECK: it prints the condition,
// the location and a message, then aborts. Library code never calls exit(); only a main() decides
// the process's fate.

namespace kiln::internal {

// Collects the streamed message of a failed check, prints it and aborts in the destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `KILN_CHECK(x) << "msg"` compile to nothing when x holds.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace kiln::internal

#define KILN_CHECK(condition)                 \
  (__builtin_expect(!!(condition), 1))        \
      ? (void)0                               \
      : ::kiln::internal::Voidify() &         \
            ::kiln::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()

#define KILN_CHECK_OP_(a, b, op) KILN_CHECK((a)op(b)) << "(" << (a) << " vs " << (b) << ") "
#define KILN_CHECK_EQ(a, b) KILN_CHECK_OP_(a, b, ==)
#define KILN_CHECK_NE(a, b) KILN_CHECK_OP_(a, b, !=)
#define KILN_CHECK_LT(a, b) KILN_CHECK_OP_(a, b, <)
#define KILN_CHECK_LE(a, b) KILN_CHECK_OP_(a, b, <=)
#define KILN_CHECK_GT(a, b) KILN_CHECK_OP_(a, b, >)
#define KILN_CHECK_GE(a, b) KILN_CHECK_OP_(a, b, >=)

// Aborts with the status message when a Status that "cannot fail" fails.
#define KILN_CHECK_OK(expr)                                     \
  do {                                                          \
    const ::absl::Status kiln_check_ok_status_ = (expr);        \
    KILN_CHECK(kiln_check_ok_status_.ok()) << kiln_check_ok_status_; \
  } while (0)

#define KILN_RETURN_IF_ERROR(expr)                            \
  do {                                                        \
    ::absl::Status kiln_return_status_ = (expr);              \
    if (!kiln_return_status_.ok()) return kiln_return_status_; \
  } while (0)

#define KILN_CONCAT_INNER_(a, b) a##b
#define KILN_CONCAT_(a, b) KILN_CONCAT_INNER_(a, b)
#define KILN_ASSIGN_OR_RETURN(lhs, expr) \
  KILN_ASSIGN_OR_RETURN_IMPL_(KILN_CONCAT_(kiln_statusor_, __LINE__), lhs, expr)
#define KILN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
