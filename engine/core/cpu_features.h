// Which vector instruction sets this CPU offers, read once with cpuid. Kernels choose their
// implementation from this at run time; KILN_CPU_ISA=avx2 (or avx512) forces a lower level so both
// paths are testable on one machine.
#pragma once

#include <string_view>

namespace kiln {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_bf16 = false;
  bool amx_tile = false;
};

const CpuFeatures& GetCpuFeatures();
// The ISA level kernels use: the best available, lowered by KILN_CPU_ISA or SetCpuIsaOverride.
CpuIsa ActiveCpuIsa();
// Overrides the level for this process (tests run both paths); kScalar is never chosen by default.
void SetCpuIsaOverride(CpuIsa isa);
std::string_view CpuIsaName(CpuIsa isa);

}  // namespace kiln
