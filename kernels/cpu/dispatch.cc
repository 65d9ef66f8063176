// Picks the kernel table of the active ISA (compiled without ISA flags).
#include "engine/core/cpu_features.h"
#include "kernels/cpu/isa_api.h"

namespace kiln::kernels::cpu {

const IsaKernels& Isa() {
  switch (ActiveCpuIsa()) {
    case CpuIsa::kAvx512:
      return avx512::kIsaKernels;
    case CpuIsa::kAvx2:
      return avx2::kIsaKernels;
    case CpuIsa::kScalar:
      break;
  }
  return scalar::kIsaKernels;
}

}  // namespace kiln::kernels::cpu
