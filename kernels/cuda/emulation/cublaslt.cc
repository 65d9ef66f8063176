// The cuBLASLt calls of kernels/cuda/matmul.cc, answered by the kernel emulation (Note [Kernel
// emulation] in cuda_emulation.h): descriptors that hold what was set, a heuristic that returns
// one algorithm, and a column-major reference matmul D = alpha op(A) op(B) + beta C (+ bias) with
// the epilogues Kiln uses (BIAS, GELU_AUX_BIAS: D = gelu(v), aux = v; DGELU: D = v * gelu'(aux),
// gelu in the tanh form, applied to the unrounded sum) that follows cuBLASLt's documented
// contract: shapes must agree, the bias has D's type and one value per row of D, the auxiliary
// matrix D's type and a leading dimension that is a multiple of 8 and at least D's rows, operands
// must be as aligned as the preferences promised (256 bytes when not set), the workspace 256-byte
// aligned. A contract broken fails with CUBLAS_STATUS_INVALID_VALUE
// and a line on stderr, where real cuBLASLt might silently misread memory. Sums are in double.
#include <cublasLt.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/cuda/emulation/cuda_emulation.h"
#include "kernels/cuda/emulation/emulator_state.h"
#include "kernels/cuda/emulation/streams.h"

namespace kiln::kernels::cuda::emulation {
namespace {

struct Layout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t batch_stride = 0;  // elements
};

struct MatmulDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;  // BIAS, GELU_AUX_BIAS: read; DGELU_BGRAD: written
  void* aux = nullptr;   // GELU_AUX_BIAS: written; DGELU, DGELU_BGRAD: read
  int64_t aux_ld = 0;
};

struct Preference {
  uint64_t max_workspace = 0;
  uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;
};

// What the emulated heuristic puts into cublasLtMatmulAlgo_t: the alignments it was promised.
struct Algo {
  uint32_t align_a, align_b, align_c, align_d;
};
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t), "algo fits");

cublasStatus_t Refuse(const char* what) {
  std::fprintf(stderr, "cuBLASLt emulation: %s\n", what);
  return CUBLAS_STATUS_INVALID_VALUE;
}

size_t ElementBytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

double LoadElement(const void* base, cudaDataType t, int64_t i) {
  switch (t) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[i];
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default:
      return __half2float(static_cast<const __half*>(base)[i]);
  }
}

void StoreElement(void* base, cudaDataType t, int64_t i, double v) {
  const float f = static_cast<float>(v);
  switch (t) {
    case CUDA_R_32F:
      static_cast<float*>(base)[i] = f;
      return;
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(f);
      return;
    default:
      static_cast<__half*>(base)[i] = __float2half_rn(f);
      return;
  }
}

bool EpilogueEmulated(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_DEFAULT || e == CUBLASLT_EPILOGUE_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU ||
         e == CUBLASLT_EPILOGUE_DGELU_BGRAD || e == CUBLASLT_EPILOGUE_BGRADA;
}
bool HasBias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool HasAux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU ||
         e == CUBLASLT_EPILOGUE_DGELU_BGRAD;
}
// DGELU_BGRAD also writes the sums of the result over D's columns (one per row of D) to the bias
// pointer, in D's type; BGRADA the sums of op(A) over k (also one per row of D).
bool HasBiasGradient(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_DGELU_BGRAD || e == CUBLASLT_EPILOGUE_BGRADA;
}

// GELU, tanh form, and its derivative, in double.
constexpr double kGeluBeta = 0.7978845608028654, kGeluKappa = 0.044715;
double Gelu(double x) {
  return 0.5 * x * (1.0 + std::tanh(kGeluBeta * (x + kGeluKappa * x * x * x)));
}
double GeluDerivative(double x) {
  const double t = std::tanh(kGeluBeta * (x + kGeluKappa * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kGeluBeta * (1.0 + 3.0 * kGeluKappa * x * x);
}

bool Aligned(const void* p, uint32_t align) { return reinterpret_cast<uintptr_t>(p) % align == 0; }

template <typename T>
bool SetValue(T* field, const void* buf, size_t bytes) {
  if (buf == nullptr || bytes != sizeof(T)) return false;
  std::memcpy(field, buf, sizeof(T));
  return true;
}

}  // namespace
}  // namespace kiln::kernels::cuda::emulation

namespace em = kiln::kernels::cuda::emulation;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = em::NewHandle<cublasLtHandle_t>();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  em::DeleteHandle(handle);
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "success (emulated)"
                                         : "invalid value or not supported (emulated)";
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F && type != CUDA_R_16BF && type != CUDA_R_16F) {
    return em::Refuse("layout type not emulated");
  }
  if (ld < static_cast<int64_t>(rows)) return em::Refuse("layout ld < rows (column-major)");
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new em::Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete reinterpret_cast<em::Layout*>(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t bytes) {
  em::Layout* l = reinterpret_cast<em::Layout*>(layout);
  bool ok = false;
  if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT) ok = em::SetValue(&l->batch, buf, bytes);
  if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET) {
    ok = em::SetValue(&l->batch_stride, buf, bytes);
  }
  return ok ? CUBLAS_STATUS_SUCCESS : em::Refuse("layout attribute not emulated or wrong size");
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) {
    return em::Refuse("only CUBLAS_COMPUTE_32F with f32 scale is emulated");
  }
  em::MatmulDesc* d = new em::MatmulDesc();
  d->compute = compute;
  d->scale = scale;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(d);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete reinterpret_cast<em::MatmulDesc*>(desc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t bytes) {
  em::MatmulDesc* d = reinterpret_cast<em::MatmulDesc*>(desc);
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      ok = em::SetValue(&d->trans_a, buf, bytes);
      break;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      ok = em::SetValue(&d->trans_b, buf, bytes);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      ok = em::SetValue(&d->epilogue, buf, bytes) && em::EpilogueEmulated(d->epilogue);
      break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      ok = em::SetValue(&d->bias, buf, bytes);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      ok = em::SetValue(&d->aux, buf, bytes);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      ok = em::SetValue(&d->aux_ld, buf, bytes);
      break;
    default:
      break;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : em::Refuse("matmul attribute not emulated or wrong size");
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new em::Preference());
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete reinterpret_cast<em::Preference*>(pref);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t bytes) {
  em::Preference* p = reinterpret_cast<em::Preference*>(pref);
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      ok = em::SetValue(&p->max_workspace, buf, bytes);
      break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      ok = em::SetValue(&p->align_a, buf, bytes);
      break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      ok = em::SetValue(&p->align_b, buf, bytes);
      break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      ok = em::SetValue(&p->align_c, buf, bytes);
      break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      ok = em::SetValue(&p->align_d, buf, bytes);
      break;
    default:
      break;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : em::Refuse("preference not emulated or wrong size");
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int* returned) {
  if (requested < 1) return em::Refuse("heuristic asked for no algorithm");
  const em::Preference& p = *reinterpret_cast<em::Preference*>(preference);
  std::memset(&results[0], 0, sizeof(results[0]));
  const em::Algo algo{p.align_a, p.align_b, p.align_c, p.align_d};
  std::memcpy(&results[0].algo, &algo, sizeof(algo));
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t compute_desc,
                              const void* alpha_ptr, const void* A, cublasLtMatrixLayout_t a_desc,
                              const void* B, cublasLtMatrixLayout_t b_desc, const void* beta_ptr,
                              const void* C, cublasLtMatrixLayout_t c_desc, void* D,
                              cublasLtMatrixLayout_t d_desc, const cublasLtMatmulAlgo_t* algo_ptr,
                              void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  // Copies: the descriptors may change or go before queued work runs (Note [Deferred streams]).
  const em::MatmulDesc desc = *reinterpret_cast<const em::MatmulDesc*>(compute_desc);
  const em::Layout a = *reinterpret_cast<const em::Layout*>(a_desc);
  const em::Layout b = *reinterpret_cast<const em::Layout*>(b_desc);
  const em::Layout c = *reinterpret_cast<const em::Layout*>(c_desc);
  const em::Layout d = *reinterpret_cast<const em::Layout*>(d_desc);
  if (algo_ptr == nullptr) return em::Refuse("no algorithm (the emulation needs the heuristic's)");
  em::Algo algo;
  std::memcpy(&algo, algo_ptr, sizeof(algo));
  const bool ta = desc.trans_a == CUBLAS_OP_T, tb = desc.trans_b == CUBLAS_OP_T;
  const uint64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
  const uint64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
  if (k != kb || d.rows != m || d.cols != n || c.rows != m || c.cols != n) {
    return em::Refuse("operand shapes do not agree: op(A) (m, k), op(B) (k, n), C and D (m, n)");
  }
  if (a.type != b.type || c.type != d.type) return em::Refuse("A/B or C/D types differ");
  const int32_t batch = d.batch;
  if (a.batch != batch || b.batch != batch || c.batch != batch) {
    return em::Refuse("batch counts differ");
  }
  const size_t ea = em::ElementBytes(a.type), ed = em::ElementBytes(d.type);
  const auto aligned_batches = [&](const void* p, const em::Layout& l, size_t e, uint32_t align) {
    return em::Aligned(p, align) &&
           (batch == 1 || static_cast<uint64_t>(l.batch_stride) * e % align == 0);
  };
  if (!aligned_batches(A, a, ea, algo.align_a) || !aligned_batches(B, b, ea, algo.align_b) ||
      !aligned_batches(C, c, ed, algo.align_c) || !aligned_batches(D, d, ed, algo.align_d)) {
    return em::Refuse("an operand (or batch) is less aligned than the heuristic was promised");
  }
  if (workspace_bytes > 0 && !em::Aligned(workspace, 256)) {
    return em::Refuse("workspace not 256-byte aligned");
  }
  if ((em::HasBias(desc.epilogue) || em::HasBiasGradient(desc.epilogue)) && desc.bias == nullptr) {
    return em::Refuse("bias epilogue without a bias pointer");
  }
  if (em::HasBiasGradient(desc.epilogue) && batch != 1) {
    return em::Refuse("batched bias-gradient epilogues are not emulated");
  }
  if (em::HasAux(desc.epilogue)) {
    if (desc.aux == nullptr) return em::Refuse("GELU epilogue without an auxiliary pointer");
    if (desc.aux_ld % 8 != 0 || desc.aux_ld < static_cast<int64_t>(m)) {
      return em::Refuse("GELU auxiliary leading dimension not a multiple of 8 or below D's rows");
    }
    if (batch != 1) return em::Refuse("batched GELU epilogues are not emulated");
  }
  const float alpha = *static_cast<const float*>(alpha_ptr);  // host scalars: read now
  const float beta = *static_cast<const float*>(beta_ptr);
  em::Enqueue(stream, [=] {
    // op(A) as (m, k) and op(B) transposed as (n, k), both row-major: contiguous dot products.
    std::vector<double> a_rows(m * k), b_rows(n * k), bias_gradient(m);
    for (int32_t bi = 0; bi < batch; ++bi) {
      const int64_t a0 = bi * a.batch_stride, b0 = bi * b.batch_stride;
      const int64_t c0 = bi * c.batch_stride, d0 = bi * d.batch_stride;
      for (uint64_t i = 0; i < m; ++i) {
        for (uint64_t l = 0; l < k; ++l) {
          a_rows[i * k + l] = em::LoadElement(A, a.type, a0 + (ta ? l + i * a.ld : i + l * a.ld));
        }
      }
      for (uint64_t j = 0; j < n; ++j) {
        for (uint64_t l = 0; l < k; ++l) {
          b_rows[j * k + l] = em::LoadElement(B, b.type, b0 + (tb ? j + l * b.ld : l + j * b.ld));
        }
      }
      for (uint64_t j = 0; j < n; ++j) {
        const double* bj = &b_rows[j * k];
        for (uint64_t i = 0; i < m; ++i) {
          const double* ai = &a_rows[i * k];
          double sum = 0;
          for (uint64_t l = 0; l < k; ++l) sum += ai[l] * bj[l];
          double v = alpha * sum;
          // C is read before D's element is written (D may be C: the same element, read first).
          if (beta != 0.0f) v += beta * em::LoadElement(C, c.type, c0 + i + j * c.ld);
          if (em::HasBias(desc.epilogue)) {
            v += em::LoadElement(desc.bias, d.type, static_cast<int64_t>(i));  // D's type
          }
          const int64_t aux_at = static_cast<int64_t>(i + j * desc.aux_ld);
          if (desc.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
            em::StoreElement(desc.aux, d.type, aux_at, v);  // the aux has D's type
            v = em::Gelu(v);
          } else if (desc.epilogue == CUBLASLT_EPILOGUE_DGELU ||
                     desc.epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD) {
            v *= em::GeluDerivative(em::LoadElement(desc.aux, d.type, aux_at));
          }
          if (desc.epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD) bias_gradient[i] += v;
          em::StoreElement(D, d.type, d0 + i + j * d.ld, v);
        }
      }
    }
    if (desc.epilogue == CUBLASLT_EPILOGUE_BGRADA) {
      for (uint64_t i = 0; i < m; ++i) {
        for (uint64_t l = 0; l < k; ++l) bias_gradient[i] += a_rows[i * k + l];
      }
    }
    if (em::HasBiasGradient(desc.epilogue)) {  // batch is 1 (checked above)
      for (uint64_t i = 0; i < m; ++i) {
        em::StoreElement(desc.bias, d.type, static_cast<int64_t>(i), bias_gradient[i]);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
