// cuBLASLt, loaded on first use: the cuBLASLt entry points the CUDA backend calls (matmul.cc),
// each forwarding to the real function in libcublasLt, which is dlopen'ed the first time any of
// them runs. A process that never multiplies on a GPU never maps the library.
// See Note [Loading cuBLASLt on first use].
#include <cublasLt.h>
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace kiln::kernels::cuda {
namespace {

// Note [Loading cuBLASLt on first use]
// libcublasLt is a 540 MB shared object whose writable data holds ~150 MB of pointers that the
// dynamic loader relocates, page by page, at load time. Linked as a normal dependency, it cost
// every process that links the engine (kiln-train on a CPU, each CPU kiln-worker, every test
// binary) ~150 MB of resident memory and ~0.1 s of start-up before main, GPU or not. Every
// other CUDA library we link is small (cudart 0.7 MB, NCCL's relocated data ~2 MB).
// So the backend does not link cuBLASLt: this file defines the 14 entry points matmul.cc calls,
// with the header's own signatures (the compiler checks them against <cublasLt.h>), and each
// resolves its real counterpart with dlsym on first call. The library is opened by its soname
// (found through the binary's run path, /usr/local/cuda/lib64, like a linked library), then by
// the toolkit's absolute path; KILN_CUBLASLT_LIBRARY, when set, names the one file to open instead
// (another toolkit's cuBLASLt, or PyTorch's wheel's). If it cannot be opened, every call returns
// CUBLAS_STATUS_NOT_INITIALIZED and cublasLtGetStatusString returns the loader's message, so the
// first matmul on a GPU fails with a line that says why, through matmul.cc's usual check.
// The kernel emulation defines the same entry points itself (emulation/cublaslt.cc) and does not
// link this file.

#define KILN_STRINGIFY_VALUE(x) KILN_STRINGIFY(x)
#define KILN_STRINGIFY(x) #x
const char* const kSoname = "libcublasLt.so." KILN_STRINGIFY_VALUE(CUBLAS_VER_MAJOR);

struct Library {
  void* handle = nullptr;
  std::mutex mu;      // guards error once the library is open
  std::string error;  // why the library or a symbol could not be loaded
};

Library* OpenLibrary() {
  Library* lib = new Library();
  if (const char* chosen = std::getenv("KILN_CUBLASLT_LIBRARY"); chosen != nullptr) {
    lib->handle = dlopen(chosen, RTLD_NOW | RTLD_LOCAL);
    if (lib->handle == nullptr) {
      lib->error =
          std::string("cuBLASLt could not be loaded (KILN_CUBLASLT_LIBRARY): ") + dlerror();
    }
    return lib;
  }
  lib->handle = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  if (lib->handle == nullptr) {
    const std::string first = dlerror();
    lib->handle =
        dlopen((std::string("/usr/local/cuda/lib64/") + kSoname).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib->handle == nullptr) {
      lib->error = "cuBLASLt could not be loaded: " + first + "; " + dlerror();
    }
  }
  return lib;
}

Library& TheLibrary() {
  static Library* lib = OpenLibrary();  // opened once, thread-safe; never destroyed
  return *lib;
}

// The real `name`, typed as our declaration of it; null if the library or the symbol is missing.
template <typename Fn>
Fn* Resolve(const char* name) {
  Library& lib = TheLibrary();
  if (lib.handle == nullptr) return nullptr;
  void* symbol = dlsym(lib.handle, name);
  std::lock_guard<std::mutex> lock(lib.mu);
  if (symbol == nullptr && lib.error.empty()) {
    lib.error = std::string("cuBLASLt has no ") + name + ": " + dlerror();
  }
  return reinterpret_cast<Fn*>(symbol);
}

}  // namespace
}  // namespace kiln::kernels::cuda

namespace {
using kiln::kernels::cuda::Resolve;
constexpr cublasStatus_t kNotLoaded = CUBLAS_STATUS_NOT_INITIALIZED;
}  // namespace

// Each entry point: resolve once (a function-local static), then forward.
#define KILN_REAL_CUBLASLT(name) static auto* const real = Resolve<decltype(name)>(#name)

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  KILN_REAL_CUBLASLT(cublasLtCreate);
  return real ? real(handle) : kNotLoaded;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  KILN_REAL_CUBLASLT(cublasLtDestroy);
  return real ? real(handle) : kNotLoaded;
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  KILN_REAL_CUBLASLT(cublasLtGetStatusString);
  kiln::kernels::cuda::Library& lib = kiln::kernels::cuda::TheLibrary();
  {
    // error is set at most once (Resolve), so the text returned stays valid.
    std::lock_guard<std::mutex> lock(lib.mu);
    if (real == nullptr || (status == kNotLoaded && !lib.error.empty())) return lib.error.c_str();
  }
  return real(status);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* a, cublasLtMatrixLayout_t a_layout, const void* b,
                              cublasLtMatrixLayout_t b_layout, const void* beta, const void* c,
                              cublasLtMatrixLayout_t c_layout, void* d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo,
                              void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  KILN_REAL_CUBLASLT(cublasLtMatmul);
  return real ? real(handle, desc, alpha, a, a_layout, b, b_layout, beta, c, c_layout, d, d_layout,
                     algo, workspace, workspace_bytes, stream)
              : kNotLoaded;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a_layout,
    cublasLtMatrixLayout_t b_layout, cublasLtMatrixLayout_t c_layout,
    cublasLtMatrixLayout_t d_layout, cublasLtMatmulPreference_t preference, int requested,
    cublasLtMatmulHeuristicResult_t results[], int* returned) {
  KILN_REAL_CUBLASLT(cublasLtMatmulAlgoGetHeuristic);
  return real ? real(handle, desc, a_layout, b_layout, c_layout, d_layout, preference, requested,
                     results, returned)
              : kNotLoaded;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  KILN_REAL_CUBLASLT(cublasLtMatmulDescCreate);
  return real ? real(desc, compute, scale) : kNotLoaded;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  KILN_REAL_CUBLASLT(cublasLtMatmulDescDestroy);
  return real ? real(desc) : kNotLoaded;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t bytes) {
  KILN_REAL_CUBLASLT(cublasLtMatmulDescSetAttribute);
  return real ? real(desc, attr, buf, bytes) : kNotLoaded;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
  KILN_REAL_CUBLASLT(cublasLtMatmulPreferenceCreate);
  return real ? real(preference) : kNotLoaded;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  KILN_REAL_CUBLASLT(cublasLtMatmulPreferenceDestroy);
  return real ? real(preference) : kNotLoaded;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t bytes) {
  KILN_REAL_CUBLASLT(cublasLtMatmulPreferenceSetAttribute);
  return real ? real(preference, attr, buf, bytes) : kNotLoaded;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  KILN_REAL_CUBLASLT(cublasLtMatrixLayoutCreate);
  return real ? real(layout, type, rows, cols, ld) : kNotLoaded;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  KILN_REAL_CUBLASLT(cublasLtMatrixLayoutDestroy);
  return real ? real(layout) : kNotLoaded;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t bytes) {
  KILN_REAL_CUBLASLT(cublasLtMatrixLayoutSetAttribute);
  return real ? real(layout, attr, buf, bytes) : kNotLoaded;
}

}  // extern "C"
