// Helpers every Kiln test can use: KILN_SKIP (report a test case as skipped with its reason — never
// as passed), tolerance comparisons with readable failure messages, and runfiles paths.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace kiln::testing {

// Marks the running test case as skipped; the listener in catch_main.cc counts it.
void MarkSkipped(const std::string& reason);

// ||a - b|| / max(||b||, tiny), the relative L2 error used across the suite.
double RelativeL2(const std::vector<float>& a, const std::vector<float>& b);
double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);

// Absolute path of a file in the test's runfiles (a `data` dependency), e.g. "kiln/tools/x.py".
std::string Runfile(const std::string& workspace_relative_path);
// A fresh directory for this test case's files (under $TEST_TMPDIR when Bazel runs the test).
std::string TempDir(const std::string& name);

// `count` pseudo-random token ids in [0, vocab) from a fixed LCG: the same list for the same seed
// on every machine (training data for tests that compare runs).
inline std::vector<uint32_t> RandomTokens(int count, uint32_t vocab, uint32_t seed) {
  std::vector<uint32_t> tokens;
  uint32_t x = seed;
  for (int i = 0; i < count; ++i) {
    x = x * 1664525u + 1013904223u;
    tokens.push_back((x >> 12) % vocab);
  }
  return tokens;
}

// Runs `command` with /bin/sh, stdout and stderr together; exit_code is 128 + the signal number
// when the command died by a signal.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& command);

}  // namespace kiln::testing

// Skips the current TEST_CASE (use at its top level): `KILN_SKIP("no CUDA device: " + why);`
#define KILN_SKIP(reason)                       \
  do {                                          \
    ::kiln::testing::MarkSkipped(reason);       \
    return;                                     \
  } while (0)

// REQUIRE that `a` is within relative L2 `tol` of the reference `b`, printing both errors.
#define KILN_REQUIRE_CLOSE(a, b, tol)                                                    \
  do {                                                                                   \
    const double kiln_rel_ = ::kiln::testing::RelativeL2((a), (b));                      \
    INFO("relative L2 error " << kiln_rel_ << " (tolerance " << (tol) << "), max abs diff " \
                              << ::kiln::testing::MaxAbsDiff((a), (b)));                 \
    REQUIRE(kiln_rel_ <= (tol));                                                         \
  } while (0)
