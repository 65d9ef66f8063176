// Engine overhead benchmarks (issue: engine foundations):
//  1. matmul through the engine (a planned one-node graph run by the executor) vs the raw oneDNN
//     matmul primitive on the same buffers, f32 and bf16, sizes 512..4096: overhead target <= 5 %.
//  2. executor cost per node on a chain of 2,000 tiny ops (1-element scale): target <= 5 us.
// Prints a table and the ratios; --markdown prints the rows for bench/RESULTS.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dnnl.hpp"
#include "engine/core/parallel.h"
#include "engine/graph/builder.h"
#include "engine/graph/executor.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"

namespace kiln {
namespace {

using Clock = std::chrono::steady_clock;

template <typename Fn>
double MedianSeconds(int repeats, Fn&& fn) {
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto a = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct MatmulRow {
  int n;
  DType dtype;
  double engine_gflops, raw_gflops;
  double time_ratio;  // median over pairs of engine time / raw time
};

MatmulRow BenchMatmul(int n, DType dtype) {
  graph::Graph g;
  graph::GraphBuilder b(&g);
  const graph::ValueId a = b.Input("a", {{n, n}, dtype});
  const graph::ValueId w = b.Input("b", {{n, n}, dtype});
  const graph::ValueId y = ops::Matmul(b, a, w);
  g.MarkOutput(y);
  auto exec = graph::Executor::Create(std::move(g));
  KILN_CHECK_OK(exec.status());
  Tensor ta = (*exec)->value(a), tb = (*exec)->value(w), ty = (*exec)->value(y);
  ta.Fill(0.5f);
  tb.Fill(0.25f);
  const double flops = 2.0 * n * n * n;
  const int reps = n >= 4096 ? 1 : (n >= 2048 ? 3 : 9);
  // Raw oneDNN on the same buffers.
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  const auto dt = dtype == DType::kF32 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
  dnnl::memory::desc md({n, n}, dt, dnnl::memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(md, md, md), eng);
  dnnl::matmul prim(pd);
  dnnl::memory ma(md, eng, ta.raw_data()), mb(md, eng, tb.raw_data()), my(md, eng, ty.raw_data());
  auto raw = [&] {
    prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, my}});
    stream.wait();
  };
  auto engine = [&] { (*exec)->Run(); };
  raw();
  engine();
  // Note [Paired timing]: the machine is shared, so its speed drifts during a run. Each pair
  // times the engine and raw oneDNN back to back (alternating which goes first) and the overhead
  // is the median of the pairs' ratios: drift between pairs cancels, drift within one is noise.
  const int pairs = n >= 4096 ? 9 : 21;
  std::vector<double> e, r, ratio;
  for (int i = 0; i < pairs; ++i) {
    double te, tr;
    if (i % 2 == 0) {
      te = MedianSeconds(reps, engine);
      tr = MedianSeconds(reps, raw);
    } else {
      tr = MedianSeconds(reps, raw);
      te = MedianSeconds(reps, engine);
    }
    e.push_back(te);
    r.push_back(tr);
    ratio.push_back(te / tr);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {n, dtype, flops / median(e) / 1e9, flops / median(r) / 1e9, median(ratio)};
}

double BenchNodeOverhead(int nodes) {
  graph::Graph g;
  graph::GraphBuilder b(&g);
  graph::ValueId x = b.Input("x", {{1}, DType::kF32});
  for (int i = 0; i < nodes; ++i) x = ops::Scale(b, x, 1.0f);
  g.MarkOutput(x);
  graph::ExecutorOptions options;
  options.planner.allow_inplace = false;  // a fresh output per node, as in a real graph
  auto exec = graph::Executor::Create(std::move(g), options);
  KILN_CHECK_OK(exec.status());
  (*exec)->Run();
  const double t = MedianSeconds(50, [&] { (*exec)->Run(); });
  return t / nodes * 1e6;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  const bool markdown = argc > 1 && std::string(argv[1]) == "--markdown";
  kiln::SetNumThreads(0);
  std::printf("threads: %d\n", kiln::NumThreads());
  std::printf("%-6s %-5s %14s %14s %9s\n", "n", "dtype", "engine GF/s", "oneDNN GF/s", "overhead");
  std::vector<std::string> md;
  for (kiln::DType d : {kiln::DType::kF32, kiln::DType::kBF16}) {
    for (int n : {512, 1024, 2048, 4096}) {
      const auto r = kiln::BenchMatmul(n, d);
      const double overhead = (r.time_ratio - 1.0) * 100.0;
      std::printf("%-6d %-5s %14.1f %14.1f %8.1f%%\n", n, std::string(kiln::DTypeName(d)).c_str(),
                  r.engine_gflops, r.raw_gflops, overhead);
      char line[200];
      std::snprintf(line, sizeof(line), "| matmul %d³ %s | %.1f | %.1f | %+.1f %% |", n,
                    std::string(kiln::DTypeName(d)).c_str(), r.engine_gflops, r.raw_gflops,
                    overhead);
      md.push_back(line);
    }
  }
  const double us = kiln::BenchNodeOverhead(2000);
  std::printf("executor overhead: %.3f us per node (2000-node chain of 1-element scale ops)\n", us);
  if (markdown) {
    std::printf("\n| case | engine GFLOP/s | raw oneDNN GFLOP/s | engine overhead (median of paired ratios) |\n|---|---|---|---|\n");
    for (const auto& l : md) std::printf("%s\n", l.c_str());
    std::printf("| executor, 2000 tiny nodes | %.3f us/node | | target <= 5 us |\n", us);
  }
  return 0;
}
