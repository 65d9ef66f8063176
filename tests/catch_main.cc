// The Catch2 main shared by every Kiln test binary. It counts test cases as passed, failed or
// skipped (KILN_SKIP), treats a test case that checked nothing as failed (nothing passes
// vacuously), and prints one summary line that tools/test.sh adds up:
//   KILN_TEST_SUMMARY passed=N failed=M skipped=K
#define CATCH_CONFIG_RUNNER
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "tests/testing.h"

namespace kiln::testing {
namespace {

struct Counts {
  int passed = 0, failed = 0, skipped = 0;
  bool skip_current = false;
  std::string skip_reason;
};

Counts& GetCounts() {
  static Counts counts;
  return counts;
}

class SummaryListener : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    GetCounts().skip_current = false;
    TestEventListenerBase::testCaseStarting(info);
  }

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    Counts& c = GetCounts();
    const auto& a = stats.totals.assertions;
    if (a.failed > 0) {
      ++c.failed;
    } else if (c.skip_current) {
      ++c.skipped;
      std::printf("SKIPPED: %s: %s\n", stats.testInfo.name.c_str(), c.skip_reason.c_str());
    } else if (a.passed == 0) {
      ++c.failed;
      std::printf("FAILED: %s: the test case checked nothing\n", stats.testInfo.name.c_str());
    } else {
      ++c.passed;
    }
    TestEventListenerBase::testCaseEnded(stats);
  }
};

}  // namespace

void MarkSkipped(const std::string& reason) {
  GetCounts().skip_current = true;
  GetCounts().skip_reason = reason;
}

double RelativeL2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  if (std::isnan(num)) return INFINITY;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

std::string Runfile(const std::string& path) {
  const char* dir = std::getenv("TEST_SRCDIR");
  if (dir != nullptr) {
    const std::string candidate = std::string(dir) + "/kiln/" + path;
    if (std::filesystem::exists(candidate)) return candidate;
  }
  return path;  // run from the workspace root by hand
}

CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir =
      std::filesystem::path(base != nullptr ? base : "/tmp/kiln-test") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace kiln::testing

using KilnSummaryListener = kiln::testing::SummaryListener;
CATCH_REGISTER_LISTENER(KilnSummaryListener)

int main(int argc, char** argv) {
  Catch::Session session;
  const int rc = session.run(argc, argv);
  const auto& c = kiln::testing::GetCounts();
  std::printf("KILN_TEST_SUMMARY passed=%d failed=%d skipped=%d\n", c.passed, c.failed,
              c.skipped);
  std::fflush(stdout);
  return (rc != 0 || c.failed > 0) ? 1 : 0;
}
