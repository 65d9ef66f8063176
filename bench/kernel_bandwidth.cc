// Memory bandwidth of the element-wise, norm and loss CPU kernels against a triad in the same run:
// each kernel's bytes read + written per call (compulsory traffic, as STREAM counts it: no
// write-allocate reads) over the median time of repeated calls on tensors far larger than the
// caches, and the ratio to triad (a = b + s c, same threads). Prints a table and replaces the
// "## Kernel bandwidth (kernels/cpu)" section of bench/RESULTS.md.
//   bazel run //bench:kernel_bandwidth -- [--mib=N] [--repeats=N] [--results=PATH] [--no-results]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/core/cpu_features.h"
#include "engine/core/parallel.h"
#include "engine/core/storage.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/norm.h"
#include "tests/kernels/cpu/kernel_runner.h"

namespace kiln::bench {
namespace {

// Elements of each main tensor (--mib sets it; by default 256 MiB of f32, larger than the
// last-level cache of the machines this runs on — 300 MiB shared L3 here holds no full working
// set).
int64_t g_elements = int64_t{64} << 20;
constexpr int64_t kNormCols = 1024;
constexpr int64_t kVocab = 8192;

double MedianSeconds(int repeats, const std::function<void()>& fn) {
  fn();  // warm-up: page faults, oneDNN/OpenMP start-up
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// a[i] = b[i] + s * c[i] over three arrays of the main tensor size: the bandwidth ceiling kernels
// are compared to.
double TriadGBps(int repeats) {
  const int64_t n = g_elements;
  Storage sa = Storage::Allocate(n * sizeof(float), Device::CPU());
  Storage sb = Storage::Allocate(n * sizeof(float), Device::CPU());
  Storage sc = Storage::Allocate(n * sizeof(float), Device::CPU());
  float* a = static_cast<float*>(sa.data());
  float* b = static_cast<float*>(sb.data());
  float* c = static_cast<float*>(sc.data());
  ParallelForInline(n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) b[i] = 1.0f, c[i] = 2.0f;
  });
  const float s = 3.0f;
  const double sec = MedianSeconds(repeats, [&] {
    ParallelForInline(n, 1 << 16, [&](int64_t lo, int64_t hi) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + s * c[i];
    });
  });
  KILN_CHECK(a[n / 2] == 7.0f) << "triad result";
  return 3.0 * n * sizeof(float) / sec / 1e9;
}

struct Case {
  std::string name;
  std::string bytes_note;  // what was counted
  double bytes = 0;        // per call
  std::function<std::unique_ptr<testing::KernelRunner>()> make;
};

Tensor Random(const Shape& shape, DType dtype) {
  Tensor t = Tensor::Zeros(shape, dtype);
  std::vector<float> v(static_cast<size_t>(t.numel()));
  uint32_t x = 12345;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = static_cast<float>(x >> 8) / 16777216.0f * 4.0f - 2.0f;
  }
  return Tensor::FromFloats(v, shape, dtype);
}

std::vector<Case> Cases() {
  using testing::KernelRunner;
  const DType f32 = DType::kF32, bf16 = DType::kBF16;
  const int64_t n = g_elements, rows = n / kNormCols, ce_rows = n / kVocab;
  const Shape flat{n}, mat{rows, kNormCols};
  const double f = sizeof(float);
  std::vector<Case> c;
  auto add = [&](std::string name, std::string note, double bytes,
                 std::function<std::unique_ptr<KernelRunner>()> make) {
    c.push_back({std::move(name), std::move(note), bytes, std::move(make)});
  };
  add("gelu f32", "x + y", 2 * f * n, [=] {
    return std::make_unique<KernelRunner>("gelu", f32, std::vector<Tensor>{Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, f32)});
  });
  add("gelu_backward f32", "dy + x + dx", 3 * f * n, [=] {
    return std::make_unique<KernelRunner>("gelu_backward", f32,
                                          std::vector<Tensor>{Random(flat, f32), Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, f32)});
  });
  add("silu f32", "x + y", 2 * f * n, [=] {
    return std::make_unique<KernelRunner>("silu", f32, std::vector<Tensor>{Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, f32)});
  });
  add("swiglu f32", "gu (2n) + out (n)", 3 * f * (n / 2), [=] {
    return std::make_unique<KernelRunner>(
        "swiglu", f32, std::vector<Tensor>{Random({rows / 2, 2 * kNormCols}, f32)},
        std::vector<Tensor>{Tensor::Zeros({rows / 2, kNormCols}, f32)});
  });
  add("add f32", "a + b + out", 3 * f * n, [=] {
    return std::make_unique<KernelRunner>("add", f32,
                                          std::vector<Tensor>{Random(flat, f32), Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, f32)});
  });
  add("scale f32", "x + y", 2 * f * n, [=] {
    return std::make_unique<KernelRunner>("scale", f32, std::vector<Tensor>{Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, f32)},
                                          ops::ScaleAttrs{0.5f});
  });
  add("cast f32->bf16", "x (4 B) + y (2 B)", 6.0 * n, [=] {
    return std::make_unique<KernelRunner>("cast", f32, std::vector<Tensor>{Random(flat, f32)},
                                          std::vector<Tensor>{Tensor::Zeros(flat, bf16)},
                                          ops::CastAttrs{bf16});
  });
  add("accumulate_grad f32+=f32", "g + G read + G written", 3 * f * n, [=] {
    return std::make_unique<KernelRunner>("accumulate_grad", f32,
                                          std::vector<Tensor>{Random(flat, f32)},
                                          std::vector<Tensor>{Random(flat, f32)});
  });
  add("accumulate_grad f32+=bf16", "g (2 B) + G read + G written", 10.0 * n, [=] {
    return std::make_unique<KernelRunner>("accumulate_grad", bf16,
                                          std::vector<Tensor>{Random(flat, bf16)},
                                          std::vector<Tensor>{Random(flat, f32)});
  });
  const ops::NormAttrs eps{1e-5f};
  const Tensor gamma = Random({kNormCols}, f32), beta = Random({kNormCols}, f32);
  add("layer_norm f32", "x + y (+ stats)", 2 * f * n + 2 * f * rows, [=] {
    return std::make_unique<KernelRunner>(
        "layer_norm", f32, std::vector<Tensor>{Random(mat, f32), gamma, beta},
        std::vector<Tensor>{Tensor::Zeros(mat, f32), Tensor::Zeros({rows}, f32),
                            Tensor::Zeros({rows}, f32)},
        eps);
  });
  add("layer_norm_backward f32", "dy + x + dx (+ stats)", 3 * f * n + 2 * f * rows, [=] {
    return std::make_unique<KernelRunner>(
        "layer_norm_backward", f32,
        std::vector<Tensor>{Random(mat, f32), Random(mat, f32), gamma, Random({rows}, f32),
                            Random({rows}, f32)},
        std::vector<Tensor>{Tensor::Zeros(mat, f32), Tensor::Zeros({kNormCols}, f32),
                            Tensor::Zeros({kNormCols}, f32)},
        eps);
  });
  add("rms_norm f32", "x + y (+ rstd)", 2 * f * n + f * rows, [=] {
    return std::make_unique<KernelRunner>(
        "rms_norm", f32, std::vector<Tensor>{Random(mat, f32), gamma},
        std::vector<Tensor>{Tensor::Zeros(mat, f32), Tensor::Zeros({rows}, f32)}, eps);
  });
  add("rms_norm_backward f32", "dy + x + dx (+ rstd)", 3 * f * n + f * rows, [=] {
    return std::make_unique<KernelRunner>(
        "rms_norm_backward", f32,
        std::vector<Tensor>{Random(mat, f32), Random(mat, f32), gamma, Random({rows}, f32)},
        std::vector<Tensor>{Tensor::Zeros(mat, f32), Tensor::Zeros({kNormCols}, f32)}, eps);
  });
  add("cross_entropy f32 (V=8192)", "logits + dlogits (+ targets)", 2 * f * n + 4.0 * ce_rows, [=] {
    std::vector<int32_t> targets(ce_rows);
    for (int64_t r = 0; r < ce_rows; ++r) targets[r] = static_cast<int32_t>(r * 7 % kVocab);
    return std::make_unique<KernelRunner>(
        "cross_entropy", f32,
        std::vector<Tensor>{Random({ce_rows, kVocab}, f32), Tensor::FromVector(targets, {ce_rows})},
        std::vector<Tensor>{Tensor::Zeros({1}, f32), Tensor::Zeros({ce_rows, kVocab}, f32)},
        ops::CrossEntropyAttrs{});
  });
  return c;
}

std::string MachineLine() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ostringstream os;
  os << model << ", " << HardwareThreads() << " logical CPUs";
  return os.str();
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  std::ostringstream os;
  os << one;
  return os.str();
}

std::string Today() {
  char buf[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", std::localtime(&now));
  return buf;
}

// Replaces the section whose heading starts with `heading` (up to the next "## "), or appends it.
void WriteSection(const std::string& path, const std::string& heading, const std::string& body) {
  std::string text;
  {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  if (text.empty()) text = "# Benchmark results\n";
  const size_t at = text.find(heading);
  if (at == std::string::npos) {
    if (text.back() != '\n') text += '\n';
    text += "\n" + body;
  } else {
    const size_t next = text.find("\n## ", at + heading.size());
    text = text.substr(0, at) + body + (next == std::string::npos ? "" : text.substr(next + 1));
  }
  std::ofstream(path) << text;
}

int Main(int argc, char** argv) {
  int repeats = 7;
  bool write_results = true;
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  std::string results = std::string(workspace ? workspace : ".") + "/bench/RESULTS.md";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--repeats=", 0) == 0)
      repeats = std::max(5, std::atoi(arg.c_str() + 10));
    else if (arg.rfind("--results=", 0) == 0)
      results = arg.substr(10);
    else if (arg == "--no-results")
      write_results = false;
    else {
      std::fprintf(
          stderr,
          "usage: kernel_bandwidth [--mib=N] [--repeats=N>=5] [--results=PATH] [--no-results]\n");
      return 2;
    }
  }
  SetNumThreads(HardwareThreads());
  const std::string load_before = LoadAverage();
  const double triad = TriadGBps(repeats);
  std::ostringstream table;
  table << "| kernel | bytes counted | MiB/call | median ms | GB/s | vs triad |\n"
        << "| --- | --- | ---: | ---: | ---: | ---: |\n";
  const int mib = static_cast<int>(g_elements >> 18);
  std::printf("triad (a = b + s*c, 3 x %d MiB, %d threads): %.1f GB/s\n\n", mib, NumThreads(),
              triad);
  std::printf("%-28s %10s %10s %8s %9s\n", "kernel", "MiB/call", "median ms", "GB/s", "vs triad");
  for (const Case& c : Cases()) {
    std::unique_ptr<testing::KernelRunner> runner = c.make();
    const double sec = MedianSeconds(repeats, [&] { runner->Run(); });
    const double gbps = c.bytes / sec / 1e9;
    std::printf("%-28s %10.1f %10.2f %8.1f %8.0f%%\n", c.name.c_str(), c.bytes / (1 << 20),
                sec * 1e3, gbps, 100 * gbps / triad);
    char row[256];
    std::snprintf(row, sizeof(row), "| %s | %s | %.1f | %.2f | %.1f | %.0f%% |\n", c.name.c_str(),
                  c.bytes_note.c_str(), c.bytes / (1 << 20), sec * 1e3, gbps, 100 * gbps / triad);
    table << row;
  }
  if (write_results) {
    std::ostringstream section;
    section << "## Kernel bandwidth (kernels/cpu)\n\n"
            << "Machine: " << MachineLine() << ". Date: " << Today()
            << ". Threads: " << NumThreads() << ", ISA: " << CpuIsaName(ActiveCpuIsa())
            << ". Median of " << repeats
            << " calls after one warm-up; tensors of 16M elements (64 MiB f32).\n"
            << "Bytes are the compulsory traffic (reads + writes, no write-allocate), as STREAM "
               "counts; triad a = b + s*c over three 64 MiB arrays measured in the same run: "
            << static_cast<int>(triad * 10) / 10.0 << " GB/s. Produced by "
            << "`bazel run -c opt //bench:kernel_bandwidth`.\n\n"
            << table.str();
    WriteSection(results, "## Kernel bandwidth (kernels/cpu)", section.str());
    std::printf("\nwrote %s\n", results.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) { return kiln::bench::Main(argc, argv); }
