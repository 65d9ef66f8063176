// Memory bandwidth of the element-wise, norm and loss CPU kernels against a triad in the same run:
// each kernel's bytes read + written per call (compulsory traffic, as STREAM counts it: no
// write-allocate reads) over the median time of repeated calls on tensors far larger than the
// caches, and the ratio to a triad (a = b + s c, same threads) run alternately with the kernel.
// Prints a table and replaces the
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

double Seconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// a[i] = b[i] + s * c[i] over three arrays of the main tensor size: the bandwidth ceiling kernels
// are compared to. Every kernel call is paired with a triad call right after it, and the ratio is
// the median of the per-pair ratios, so each ratio compares runs made under the same conditions
// (the machine is shared and its load changes from second to second).
class Triad {
 public:
  Triad()
      : a_(Storage::Allocate(g_elements * sizeof(float), Device::CPU())),
        b_(Storage::Allocate(g_elements * sizeof(float), Device::CPU())),
        c_(Storage::Allocate(g_elements * sizeof(float), Device::CPU())) {
    float* b = static_cast<float*>(b_.data());
    float* c = static_cast<float*>(c_.data());
    ParallelForInline(g_elements, 1 << 16, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) b[i] = 1.0f, c[i] = 2.0f;
    });
  }

  void Run() {
    float* a = static_cast<float*>(a_.data());
    const float* b = static_cast<const float*>(b_.data());
    const float* c = static_cast<const float*>(c_.data());
    const float s = 3.0f;
    ParallelForInline(g_elements, 1 << 16, [&](int64_t lo, int64_t hi) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + s * c[i];
    });
    KILN_CHECK(a[g_elements / 2] == 7.0f) << "triad result";
  }
  static double Bytes() { return 3.0 * g_elements * sizeof(float); }

 private:
  Storage a_, b_, c_;
};

// Medians over `repeats` (kernel call, triad call) pairs after one warm-up of each.
struct Measurement {
  double kernel_seconds, kernel_gbps, triad_gbps, ratio;
};
Measurement Measure(int repeats, double bytes, testing::KernelRunner& kernel, Triad& triad) {
  kernel.Run();
  triad.Run();
  std::vector<double> secs, kernel_gbps, triad_gbps, ratio;
  for (int i = 0; i < repeats; ++i) {
    const double k = Seconds([&] { kernel.Run(); });
    const double t = Seconds([&] { triad.Run(); });
    secs.push_back(k);
    kernel_gbps.push_back(bytes / k / 1e9);
    triad_gbps.push_back(Triad::Bytes() / t / 1e9);
    ratio.push_back(kernel_gbps.back() / triad_gbps.back());
  }
  return {Median(secs), Median(kernel_gbps), Median(triad_gbps), Median(ratio)};
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
  int repeats = 9;
  bool write_results = true;
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  std::string results = std::string(workspace ? workspace : ".") + "/bench/RESULTS.md";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--mib=", 0) == 0) {
      g_elements = std::max<int64_t>(1, std::atol(arg.c_str() + 6)) << 18;
    } else if (arg.rfind("--repeats=", 0) == 0) {
      repeats = std::max(5, std::atoi(arg.c_str() + 10));
    } else if (arg.rfind("--results=", 0) == 0) {
      results = arg.substr(10);
    } else if (arg == "--no-results") {
      write_results = false;
    } else {
      std::fprintf(stderr,
                   "usage: kernel_bandwidth [--mib=N] [--repeats=N>=5] "
                   "[--results=PATH] [--no-results]\n");
      return 2;
    }
  }
  SetNumThreads(HardwareThreads());
  const int mib = static_cast<int>(g_elements >> 18);
  const std::string load_before = LoadAverage();
  Triad triad;
  std::vector<double> triads;
  std::ostringstream table;
  table << "| kernel | bytes counted | MiB/call | median ms | GB/s | triad GB/s | vs triad |\n"
        << "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n";
  std::printf("%d threads, %d MiB tensors, 1-min load average %s\n", NumThreads(), mib,
              load_before.c_str());
  std::printf("%-28s %9s %9s %8s %11s %9s\n", "kernel", "MiB/call", "median ms", "GB/s",
              "triad GB/s", "vs triad");
  for (const Case& c : Cases()) {
    std::unique_ptr<testing::KernelRunner> runner = c.make();
    const Measurement m = Measure(repeats, c.bytes, *runner, triad);
    triads.push_back(m.triad_gbps);
    std::printf("%-28s %9.1f %9.2f %8.1f %11.1f %8.0f%%\n", c.name.c_str(), c.bytes / (1 << 20),
                m.kernel_seconds * 1e3, m.kernel_gbps, m.triad_gbps, 100 * m.ratio);
    char row[256];
    std::snprintf(row, sizeof(row), "| %s | %s | %.1f | %.2f | %.1f | %.1f | %.0f%% |\n",
                  c.name.c_str(), c.bytes_note.c_str(), c.bytes / (1 << 20), m.kernel_seconds * 1e3,
                  m.kernel_gbps, m.triad_gbps, 100 * m.ratio);
    table << row;
  }
  std::sort(triads.begin(), triads.end());
  const double triad_median = triads[triads.size() / 2];
  std::printf("triad (a = b + s*c, 3 x %d MiB): median %.1f GB/s over the run\n", mib,
              triad_median);
  if (write_results) {
    std::ostringstream section;
    section << "## Kernel bandwidth (kernels/cpu)\n\n"
            << "Machine: " << MachineLine() << ". Date: " << Today()
            << ". Threads: " << NumThreads() << ", ISA: " << CpuIsaName(ActiveCpuIsa())
            << ". Tensors of " << mib << " MiB (f32).\n\n"
            << "Bytes are the compulsory traffic (reads + writes, no write-allocate reads), as "
               "STREAM counts. Each kernel call is paired with a call of triad a = b + s*c (three "
            << mib << " MiB arrays, same threads) right after it; the figures are medians over "
            << repeats
            << " pairs after one warm-up, and 'vs triad' is the median of the per-pair ratios, "
               "because the machine is shared and its load moves from second to second "
               "(1-minute load average "
            << load_before << " at the start; triad median over the run "
            << static_cast<int>(triad_median * 10) / 10.0
            << " GB/s). A kernel that reads and writes one stream pays one write-allocate read "
               "for two counted streams, against one for three in triad, so about 89% is its "
               "ceiling; in-place kernels (accumulate_grad) read the lines they write, skip the "
               "write-allocate and can exceed 100%. Produced by "
               "`bazel run //bench:kernel_bandwidth`.\n\n"
            << table.str();
    WriteSection(results, "## Kernel bandwidth (kernels/cpu)", section.str());
    std::printf("wrote %s\n", results.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) { return kiln::bench::Main(argc, argv); }
