// cpuid probing and the process's active ISA level.
#include "engine/core/cpu_features.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace kiln {

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) f.f16c = (c >> 29) & 1;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = (a >> 5) & 1;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      f.avx512_fp16 = (d >> 23) & 1;
      f.amx_bf16 = (d >> 22) & 1;
      f.amx_tile = (d >> 24) & 1;
    }
    return f;
  }();
  return features;
}

namespace {

CpuIsa BestIsa() {
  const CpuFeatures& f = GetCpuFeatures();
  // Both vector paths also convert f16 with F16C instructions.
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.f16c) return CpuIsa::kAvx512;
  if (f.avx2 && f.fma && f.f16c) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

CpuIsa DefaultIsa() {
  CpuIsa best = BestIsa();
  const char* env = std::getenv("KILN_CPU_ISA");
  if (env != nullptr) {
    if (std::strcmp(env, "avx2") == 0 && best >= CpuIsa::kAvx2) return CpuIsa::kAvx2;
    if (std::strcmp(env, "scalar") == 0) return CpuIsa::kScalar;
  }
  return best;
}

std::atomic<int> g_override{-1};

}  // namespace

CpuIsa ActiveCpuIsa() {
  static const CpuIsa default_isa = DefaultIsa();
  const int o = g_override.load(std::memory_order_relaxed);
  if (o >= 0 && static_cast<CpuIsa>(o) <= BestIsa()) return static_cast<CpuIsa>(o);
  return default_isa;
}

void SetCpuIsaOverride(CpuIsa isa) { g_override.store(static_cast<int>(isa)); }

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar: return "scalar";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

}  // namespace kiln
