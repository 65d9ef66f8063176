// Resource checks of every CUDA kernel from ptxas's report (the build writes one per .cu file:
// third_party/cuda.bzl), for the limits the kernel emulation cannot see (Note [Kernel emulation]):
// register spills and local-memory stack frames (slow), and registers x threads per block over the
// register file (a launch that fails on the device: "too many resources requested"). Runs without
// a GPU; the reports cover sm_80 and sm_90 machine code.
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "tests/testing.h"

namespace kiln::testing {
namespace {

struct KernelResources {
  std::string report;  // the .cu file's report
  std::string name;    // mangled
  std::string arch;    // sm_80, sm_90, sm_90a
  int registers = -1;
  int stack_bytes = 0, spill_store_bytes = 0, spill_load_bytes = 0;
};

std::vector<KernelResources> ParseReport(const std::filesystem::path& path) {
  static const std::regex entry(R"(Compiling entry function '(\S+)' for '(sm_\w+)')");
  static const std::regex frame(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  static const std::regex used(R"(Used (\d+) registers)");
  std::vector<KernelResources> kernels;
  std::ifstream in(path);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, entry)) {
      kernels.push_back({path.filename().string(), m[1], m[2]});
    } else if (!kernels.empty() && std::regex_search(line, m, frame)) {
      kernels.back().stack_bytes = std::stoi(m[1]);
      kernels.back().spill_store_bytes = std::stoi(m[2]);
      kernels.back().spill_load_bytes = std::stoi(m[3]);
    } else if (!kernels.empty() && std::regex_search(line, m, used)) {
      kernels.back().registers = std::stoi(m[1]);
    }
  }
  return kernels;
}

// Kernels allowed to use local memory, each with the reason. A pattern is a substring of the
// mangled name ("Li128E" is the template argument 128) and an architecture ("" = any). Entries
// that no longer match a spilling kernel fail the test, so the list only shrinks.
struct AllowedSpill {
  const char* name_part;
  const char* head_dim_part;
  const char* arch;
  const char* reason;
};
constexpr AllowedSpill kAllowedSpills[] = {
    // The wmma dk/dv kernel at head_dim 128 (bf16 / f16 Llama-sized heads): a few spilled values.
    {"attention_tc_dkdv_kernel", "Li128E", "", "wmma dk/dv at head_dim 128"},
    {"attention_tc_dkdv_kernel", "Li64E", "sm_80", "wmma dk/dv on sm_80 (sm_90 is clean)"},
};

bool Matches(const AllowedSpill& a, const KernelResources& k) {
  return k.name.find(a.name_part) != std::string::npos &&
         k.name.find(a.head_dim_part) != std::string::npos &&
         (std::string(a.arch).empty() || k.arch == a.arch);
}

// Threads per block of the kernels launched with more than kDefaultBlockThreads (by their launch
// code); every other kernel is launched with at most that many.
constexpr int kDefaultBlockThreads = 256;
struct WideBlock {
  const char* name_part;
  int threads;
};
constexpr WideBlock kWideBlocks[] = {
    {"count_targets_kernel", 1024},  // loss.cu: one block counts the targets
};
constexpr int kRegistersPerSm = 65536;

std::vector<KernelResources> AllKernels() {
  const std::filesystem::path dir = Runfile("kernels/cuda/_nvcc/cuda");
  std::vector<KernelResources> all;
  if (!std::filesystem::is_directory(dir)) return all;
  for (const auto& file : std::filesystem::directory_iterator(dir)) {
    const std::string name = file.path().filename().string();
    if (name.size() < 10 || name.substr(name.size() - 10) != ".ptxas.txt") continue;
    for (KernelResources& k : ParseReport(file.path())) all.push_back(std::move(k));
  }
  return all;
}

TEST_CASE("CUDA kernels spill only where documented and fit the register file", "[cuda][host]") {
#if defined(KILN_EXPECT_NOCUDA)
  KILN_SKIP("built without CUDA (--config=nocuda): no ptxas reports");
#endif
  const std::vector<KernelResources> kernels = AllKernels();
  INFO("kernels x architectures in the reports: " << kernels.size());
  REQUIRE(kernels.size() > 100);

  std::string problems;
  std::vector<bool> allowance_used(std::size(kAllowedSpills), false);
  int sm80 = 0, sm90 = 0;
  for (const KernelResources& k : kernels) {
    sm80 += k.arch == "sm_80";
    sm90 += k.arch.rfind("sm_90", 0) == 0;
    const std::string where = k.arch + " " + k.report + " " + k.name;
    if (k.registers < 0) problems += "\n  no register count: " + where;
    if (k.stack_bytes > 0 || k.spill_store_bytes > 0 || k.spill_load_bytes > 0) {
      bool allowed = false;
      for (size_t a = 0; a < std::size(kAllowedSpills); ++a) {
        if (Matches(kAllowedSpills[a], k)) allowed = allowance_used[a] = true;
      }
      if (!allowed) {
        problems += "\n  uses local memory (stack " + std::to_string(k.stack_bytes) +
                    " B, spill stores " + std::to_string(k.spill_store_bytes) + " B): " + where;
      }
    }
    int threads = kDefaultBlockThreads;
    for (const WideBlock& w : kWideBlocks) {
      if (k.name.find(w.name_part) != std::string::npos) threads = w.threads;
    }
    if (k.registers * threads > kRegistersPerSm) {
      problems += "\n  " + std::to_string(k.registers) + " registers x " + std::to_string(threads) +
                  " threads exceed the register file: " + where;
    }
  }
  for (size_t a = 0; a < std::size(kAllowedSpills); ++a) {
    if (!allowance_used[a]) {
      problems += std::string("\n  allowed to spill but clean now (drop it from the list): ") +
                  kAllowedSpills[a].name_part + " " + kAllowedSpills[a].head_dim_part + " " +
                  kAllowedSpills[a].arch;
    }
  }
  INFO("sm_80 kernels " << sm80 << ", sm_90 kernels " << sm90 << problems);
  REQUIRE(sm80 > 50);
  REQUIRE(sm90 == sm80);
  REQUIRE(problems.empty());
}

}  // namespace
}  // namespace kiln::testing
