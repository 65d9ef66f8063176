// The oneDNN matmul ceiling of this machine (f32 and bf16 GFLOP/s at 2048^3, all threads): the
// denominator of MFU in bench/cpu_train.sh. Prints "f32_gflops=X bf16_gflops=Y".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "dnnl.hpp"

namespace {

double Gflops(dnnl::memory::data_type dt, int n) {
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  dnnl::memory::desc md({n, n}, dt, dnnl::memory::format_tag::ab);
  dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(md, md, md), eng));
  dnnl::memory a(md, eng), b(md, eng), c(md, eng);
  std::fill_n(static_cast<char*>(a.get_data_handle()), md.get_size(), 0x3c);
  std::fill_n(static_cast<char*>(b.get_data_handle()), md.get_size(), 0x3c);
  std::vector<double> t;
  for (int r = 0; r < 7; ++r) {
    const auto s = std::chrono::steady_clock::now();
    prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  return 2.0 * n * n * n / t[3] / 1e9;
}

}  // namespace

int main() {
  std::printf("f32_gflops=%.1f bf16_gflops=%.1f\n", Gflops(dnnl::memory::data_type::f32, 2048),
              Gflops(dnnl::memory::data_type::bf16, 2048));
  return 0;
}
