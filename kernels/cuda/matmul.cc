// CUDA matmul through cuBLASLt: the operation descriptor, layouts and algorithm are chosen once
// per node in Prepare for the bound shapes and addresses, then Run is one cublasLtMatmul on the
// compute stream with the cuBLASLt workspace taken from the node's workspace. f32 runs with f32
// compute (no TF32: results match the CPU within 1e-5); bf16 and f16 accumulate in f32.
// The fused forms (engine/ops/attrs/matmul.h, made by the fusion passes) are the same kernel with
// a cuBLASLt epilogue (Note [GELU in the matmul epilogue]): matmul_bias adds the bias (N) to every
// row in the same launch, matmul_bias_gelu also applies gelu and stores its input as the auxiliary
// output, matmul_dgelu multiplies the product by gelu'(pre) read from the auxiliary input, and
// matmul_dgelu_bgrad also sums the result's columns into the bias gradient, and matmul_bgrad
// those of its second operand (Note [Bias gradient in the matmul epilogue]).
#include "engine/ops/attrs/matmul.h"

#include <cublasLt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/launch_geometry.h"

#define KILN_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                          \
    const cublasStatus_t kiln_cublas_status_ = (call);                                          \
    if (kiln_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                         \
      ::kiln::kernels::cuda::CudaCallFailed(                                                    \
          "cuBLASLt", cublasLtGetStatusString(kiln_cublas_status_), __FILE__, __LINE__, #call); \
    }                                                                                           \
  } while (0)

namespace kiln::kernels::cuda {
namespace {

// Note [cuBLASLt workspace size]
// NVIDIA recommends 32 MiB of cuBLAS workspace on Hopper, 4 MiB on earlier GPUs (cuBLAS docs,
// cublasSetWorkspace); the heuristic only offers algorithms whose workspace fits. Every
// matmul node asks for this much, but a node's workspace is live for that node alone (Note [Arena
// packing]) and all nodes run in order on the compute stream, so the planner packs the workspaces
// of all matmul nodes into the same arena bytes: the arena grows by about one workspace, not one
// per node (checked on GPT-2 124M in tests/engine/graph/memory_planner_test.cc).
constexpr size_t kCublasWorkspace = size_t{32} << 20;
// The planner aligns workspaces to 64 bytes; cuBLAS asks for 256-byte aligned workspaces
// (cublasSetWorkspace refuses less), so each node reserves the slack and aligns the pointer up.
constexpr size_t kWorkspaceAlign = 256;

void* AlignedWorkspace(void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<void*>((a + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
}

cublasLtHandle_t HandleFor(Device device) {
  static std::mutex mu;
  static std::vector<cublasLtHandle_t>* handles = new std::vector<cublasLtHandle_t>();
  std::lock_guard<std::mutex> lock(mu);
  if (handles->size() <= static_cast<size_t>(device.index)) handles->resize(device.index + 1);
  cublasLtHandle_t& h = (*handles)[device.index];
  if (h == nullptr) {
    SetCurrentDevice(device);
    KILN_CUBLAS_CHECK(cublasLtCreate(&h));
  }
  return h;
}

cudaDataType_t DataType(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// Note [GELU in the matmul epilogue]
// GPT-2's MLP is y = gelu(x W + b), and its backward starts dpre = (dout W2^T) * gelu'(pre).
// Unfused, gelu re-reads the product pre from memory and writes y, and gelu_backward re-reads the
// product dy and writes dpre: for GPT-2 124M at (B 16, T 1024) that is ~100 MB of bf16 traffic
// per layer each way. cuBLASLt's GELU_AUX_BIAS epilogue writes pre (the auxiliary output) and
// gelu(pre) from the accumulator, and DGELU multiplies the accumulator by gelu'(aux) before the
// store, so each pass over the (rows, F) tensor disappears with its launch. cuBLASLt's GELU is the
// tanh form, as GPT-2's; it rounds nothing before applying it (the unfused ops round pre or dy to
// bf16 first), a difference inside bf16's tolerance. Its auxiliary leading dimension must be a
// multiple of 8 and the heuristic may offer no algorithm for an epilogue; either way, or with
// KILN_CUDA_GELU_EPILOGUE=0, the node runs the plain (bias) matmul and then the element-wise gelu
// or gelu_backward kernel on the same stream: the unfused cost, the same results.
bool GeluEpilogueAllowed() {
  const char* v = std::getenv("KILN_CUDA_GELU_EPILOGUE");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Note [DGELU epilogue off by default]
// Measured on an H200 (bench/gpu_train.sh, GPT-2 124M, B 8, T 1024, cuBLASLt 13): the MLP's
// backward matmul_dgelu_bgrad took 2.89 ms a step (12 nodes) with cuBLASLt's DGELU_BGRAD epilogue
// and 1.70 ms as the plain matmul, the gelu_backward kernel and the column-sum kernel: the
// heuristic's DGELU kernels are far slower than its plain GEMM, more than the saved pass over
// dpre. The forward's GELU_AUX_BIAS and the weight gradients' BGRADA cost no more than their
// unfused forms, and stay on. So the backward GELU epilogue (DGELU, and DGELU_BGRAD with it) is
// off unless KILN_CUDA_DGELU_EPILOGUE=1; KILN_CUDA_GELU_EPILOGUE=0 still turns off both GELU
// epilogues.
bool DGeluEpilogueAllowed() {
  const char* v = std::getenv("KILN_CUDA_DGELU_EPILOGUE");
  return GeluEpilogueAllowed() && v != nullptr && std::strcmp(v, "1") == 0;
}

// Note [Bias gradient in the matmul epilogue]
// The MLP's first bias gradient is the column sum of dpre (rows, F), the product of matmul_dgelu:
// a sum_to kernel would read all of dpre again (GPT-2 124M at (B 8, T 1024): 50 MB per layer).
// cuBLASLt's DGELU_BGRAD epilogue sums the columns of the result while it is still in the
// accumulators and writes the sums as its bias vector (D's rows, our columns; in D's type), so
// matmul_dgelu_bgrad costs what matmul_dgelu costs. The order of that sum is cuBLASLt's own (still
// the same on every run of one algorithm), not the column-sum kernel's, a difference inside bf16's
// tolerance. When the heuristic offers no algorithm for it, or with KILN_CUDA_BGRAD_EPILOGUE=0,
// the node runs the DGELU epilogue and then the column-sum kernel on the same stream; without
// the GELU epilogue (KILN_CUDA_GELU_EPILOGUE=0, or none offered) it runs unfused throughout.
// The other bias gradients (GPT-2's c_attn, attn c_proj and mlp c_proj: 63 MB of dy per layer at
// that size) are the row sums of the dy that their weight gradient a^T dy reads anyway:
// matmul_bgrad asks for BGRADA, the sums of cuBLASLt's first operand (our b = dy, (N, tokens) as
// cuBLASLt sees it) over the GEMM's k, one per row of D (our columns). Same fallback: the plain
// matmul, then the column-sum kernel over dy.
bool BiasGradEpilogueAllowed() {
  const char* v = std::getenv("KILN_CUDA_BGRAD_EPILOGUE");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Warns once per kind that cuBLASLt offers no algorithm for a fused form, which then runs apart.
void WarnEpilogueRefused(const char* what, DType dtype, int64_t n) {
  static std::mutex mu;
  static std::vector<std::string> warned;
  const std::lock_guard<std::mutex> lock(mu);
  for (const std::string& w : warned) {
    if (w == what) return;
  }
  warned.emplace_back(what);
  std::fprintf(stderr,
               "kiln: cuBLASLt offers no %s epilogue for a %s matmul (N %lld); running the "
               "matmul and the element-wise kernels apart\n",
               what, std::string(DTypeName(dtype)).c_str(), static_cast<long long>(n));
}

// Note [Row-major matmul on cuBLASLt]
// cuBLASLt is column-major. A row-major (r, c) matrix is the column-major (c, r) matrix with the
// same buffer, so row-major C = op(a) op(b) is computed as column-major C^T = op(b)^T op(a)^T:
// cuBLASLt's first operand is our b, its second our a, and the output layout is (N, M) with
// leading dimension N. Without trans_a and with a shared 2-D b the batch folds into M (one
// large matmul, as the CPU kernel does); otherwise a strided batch, b's stride 0 when shared.
template <ops::MatmulEpilogue kEpilogue>
class MatmulKernel final : public Kernel {
 public:
  ~MatmulKernel() override {
    for (cublasLtMatrixLayout_t l : {a_layout_, b_layout_, c_layout_}) {
      if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
    }
    if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);
  }

  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    return kCublasWorkspace + kWorkspaceAlign + ColumnSumBytes(ctx);
  }

  absl::Status Prepare(const KernelContext& ctx) override {
    const MatmulShape shape = CheckMatmul(ctx, DeviceType::kCUDA, kEpilogue);
    empty_ = shape.m == 0 || shape.n == 0 || shape.batch == 0;
    zero_k_ = shape.k == 0;
    if (empty_ || zero_k_) return absl::OkStatus();
    const DType dtype = ctx.input(0).dtype();
    // Note [GELU in the matmul epilogue], Note [DGELU epilogue off by default]
    if (kGelu && (kDGelu ? DGeluEpilogueAllowed() : GeluEpilogueAllowed()) && shape.n % 8 == 0) {
      gelu_in_epilogue_ = true;
      if (kBiasGrad && BiasGradEpilogueAllowed()) {  // Note [Bias gradient in the matmul epilogue]
        bias_grad_in_epilogue_ = true;
        if (Describe(ctx, shape).ok()) return absl::OkStatus();
        WarnEpilogueRefused("DGELU_BGRAD", dtype, shape.n);
        DestroyDescriptors();
        bias_grad_in_epilogue_ = false;
      }
      if (Describe(ctx, shape).ok()) return absl::OkStatus();
      WarnEpilogueRefused("GELU", dtype, shape.n);
      DestroyDescriptors();
    }
    gelu_in_epilogue_ = false;
    if (kEpilogue == ops::MatmulEpilogue::kBGrad && BiasGradEpilogueAllowed()) {
      bias_grad_in_epilogue_ = true;
      if (Describe(ctx, shape).ok()) return absl::OkStatus();
      WarnEpilogueRefused("BGRADA", dtype, shape.n);
      DestroyDescriptors();
      bias_grad_in_epilogue_ = false;
    }
    return Describe(ctx, shape);
  }

  void Run(const KernelContext& ctx) override {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    const Tensor& c = Destination(ctx);
    if (empty_) return;
    const StreamPtr stream = LaunchStreamFor(a);
    if (zero_k_) {  // an empty sum: zeros (matmul_bgrad: no rows, so its bias gradient too)
      KILN_CHECK(kEpilogue == ops::MatmulEpilogue::kNone ||
                 kEpilogue == ops::MatmulEpilogue::kBGrad)
          << "a fused matmul with an empty inner dimension";
      for (const Tensor* t : {&c, kBiasGrad ? &ctx.output(1) : &c}) {
        KILN_CUDA_CHECK(
            cudaMemsetAsync(t->raw_data(), 0, t->nbytes(), static_cast<cudaStream_t>(stream)));
      }
      return;
    }
    KILN_CHECK(desc_ != nullptr) << "matmul ran before Prepare";
    KILN_CHECK(ctx.workspace_bytes >= WorkspaceBytes(ctx)) << "matmul workspace";
    const float alpha = 1.0f, beta = 0.0f;
    KILN_CUBLAS_CHECK(cublasLtMatmul(
        HandleFor(a.device()), desc_, &alpha, b.raw_data(), b_layout_, a.raw_data(), a_layout_,
        &beta, c.raw_data(), c_layout_, c.raw_data(), c_layout_, &algo_,
        AlignedWorkspace(ctx.workspace), kCublasWorkspace, static_cast<cudaStream_t>(stream)));
    const FloatType type = ToFloatType(c.dtype());
    if (!gelu_in_epilogue_) {
      if constexpr (kEpilogue == ops::MatmulEpilogue::kBiasGelu) {  // c is pre: y = gelu(pre)
        LaunchUnary(UnaryOp::kGelu, type, type, c.raw_data(), ctx.output(1).raw_data(), c.numel(),
                    1.0f, nullptr, stream);
      } else if constexpr (kDGelu) {  // c = c * gelu'(pre)
        LaunchBinary(BinaryOp::kGeluBackward, type, type, c.raw_data(), ctx.input(2).raw_data(),
                     c.raw_data(), c.numel(), c.numel(), stream);
      }
    }
    if constexpr (kBiasGrad) {  // dbias = column sums, unless the epilogue wrote them
      if (!bias_grad_in_epilogue_) {
        const Tensor& summed = SummedForBiasGrad(ctx);
        const int64_t n = summed.size(-1);
        LaunchSumTo(type, summed.raw_data(), summed.numel() / n, n, ctx.output(1).raw_data(),
                    static_cast<char*>(ctx.workspace) + kCublasWorkspace + kWorkspaceAlign, stream);
      }
    }
  }

 private:
  static constexpr bool kDGelu =
      kEpilogue == ops::MatmulEpilogue::kDGelu || kEpilogue == ops::MatmulEpilogue::kDGeluBGrad;
  static constexpr bool kGelu = kEpilogue == ops::MatmulEpilogue::kBiasGelu || kDGelu;
  static constexpr bool kBiasGrad =
      kEpilogue == ops::MatmulEpilogue::kDGeluBGrad || kEpilogue == ops::MatmulEpilogue::kBGrad;

  // The matrix whose column sums are the bias gradient: the result (matmul_dgelu_bgrad) or b
  // (matmul_bgrad).
  static const Tensor& SummedForBiasGrad(const KernelContext& ctx) {
    return kEpilogue == ops::MatmulEpilogue::kBGrad ? ctx.input(1) : ctx.output(0);
  }
  // The column-sum kernel's workspace, after cuBLASLt's (a bias gradient without its epilogue).
  static size_t ColumnSumBytes(const KernelContext& ctx) {
    if (!kBiasGrad) return 0;
    const Tensor& summed = SummedForBiasGrad(ctx);
    const int64_t n = summed.size(-1);
    return n == 0 ? 0 : SumToWorkspaceBytes(summed.numel() / n, n);
  }

  void DestroyDescriptors() {
    for (cublasLtMatrixLayout_t* l : {&a_layout_, &b_layout_, &c_layout_}) {
      if (*l != nullptr) cublasLtMatrixLayoutDestroy(*l);
      *l = nullptr;
    }
    if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);
    desc_ = nullptr;
  }

  // The descriptors, layouts and algorithm for the bound tensors, with the epilogue that
  // gelu_in_epilogue_ selects.
  absl::Status Describe(const KernelContext& ctx, const MatmulShape& shape) {
    const auto& attrs = ctx.attrs_as<ops::MatmulAttrs>();
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    const Tensor& c = Destination(ctx);
    const DType dtype = a.dtype();
    const int64_t m = shape.m, k = shape.k, n = shape.n;
    int64_t batch = shape.batch;
    const bool b_batched = shape.b_batched;
    int64_t rows = m;  // M as cuBLASLt sees it
    if (!b_batched && !attrs.trans_a) {
      rows = batch * m;
      batch = 1;
    }
    const bool has_bias = shape.has_bias();
    // The fusion passes only fuse linear layers (a shared 2-D weight, no transposed a), which fold
    // into one matmul; a strided batch would need bias and auxiliary batch strides.
    if (kEpilogue != ops::MatmulEpilogue::kNone && batch != 1) {
      return absl::UnimplementedError(
          absl::StrCat("fused matmuls on CUDA need a foldable batch; got ", batch, " x ", rows,
                       " x ", n, " x ", k));
    }
    const cudaDataType_t type = DataType(dtype);
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_first = attrs.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_second = attrs.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                     sizeof(op_first)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                     sizeof(op_second)));
    const cublasLtEpilogue_t epilogue = EpilogueFor(has_bias);
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                     &epilogue, sizeof(epilogue)));
    if (has_bias || bias_grad_in_epilogue_) {
      // Column-major D is (N, rows): cuBLASLt's bias (or bias gradient, an output) runs along D's
      // rows, i.e. our columns. Its type defaults to D's; the pointer is bound for the node's
      // lifetime like the operands.
      const void* bias_pointer = has_bias ? ctx.input(2).raw_data() : ctx.output(1).raw_data();
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &bias_pointer, sizeof(bias_pointer)));
    }
    if (gelu_in_epilogue_) {
      // The auxiliary matrix (pre) is laid out as D: column-major (N, rows), leading dimension N.
      const void* aux = Auxiliary(ctx).raw_data();
      const int64_t aux_ld = n;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          desc_, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                       &aux_ld, sizeof(aux_ld)));
    }
    // First operand (our b): stored (K, N) -> col-major (N, K) ld N; trans_b: (N, K) -> (K, N).
    if (attrs.trans_b) {
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_layout_, type, k, n, k));
    } else {
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_layout_, type, n, k, n));
    }
    // Second operand (our a): stored (M, K) -> col-major (K, M) ld K; trans_a: (K, M) -> (M, K).
    if (attrs.trans_a) {
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_layout_, type, rows, k, rows));
    } else {
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_layout_, type, k, rows, k));
    }
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_layout_, type, n, rows, n));
    if (batch > 1) {
      const int32_t count = static_cast<int32_t>(batch);
      const int64_t a_stride = rows * k, b_stride = b_batched ? k * n : 0, c_stride = rows * n;
      for (auto [layout, stride] : {std::pair{a_layout_, a_stride}, std::pair{b_layout_, b_stride},
                                    std::pair{c_layout_, c_stride}}) {
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
      }
    }
    cublasLtMatmulPreference_t pref;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kCublasWorkspace;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    // The addresses are bound for the node's lifetime: tell the heuristic their alignment, that of
    // every batch too (Note [cuBLASLt operand alignment]).
    const int64_t elem = static_cast<int64_t>(a.element_size());
    const int64_t a_batch = batch > 1 ? rows * k : 0, c_batch = batch > 1 ? rows * n : 0;
    const int64_t b_batch = batch > 1 && b_batched ? k * n : 0;
    const auto address = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()); };
    const uint32_t align_a = OperandAlignment(address(a), {a_batch * elem});
    const uint32_t align_b = OperandAlignment(address(b), {b_batch * elem});
    const uint32_t align_c = OperandAlignment(address(c), {c_batch * elem});
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b, sizeof(align_b)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a, sizeof(align_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(HandleFor(a.device()), desc_, b_layout_, a_layout_,
                                       c_layout_, c_layout_, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
      return absl::UnimplementedError(absl::StrCat(
          "cuBLASLt has no algorithm for ", std::string(DTypeName(dtype)), " matmul (", batch,
          " x ", rows, " x ", n, " x ", k, "): ", cublasLtGetStatusString(status)));
    }
    algo_ = result.algo;
    return absl::OkStatus();
  }

  // Where cuBLASLt writes: y for matmul_bias_gelu with the epilogue (pre is the auxiliary output),
  // otherwise output 0 (the product, or pre).
  const Tensor& Destination(const KernelContext& ctx) const {
    return kEpilogue == ops::MatmulEpilogue::kBiasGelu && gelu_in_epilogue_ ? ctx.output(1)
                                                                            : ctx.output(0);
  }
  // The GELU epilogue's auxiliary matrix: pre, written (forward) or read (backward).
  const Tensor& Auxiliary(const KernelContext& ctx) const {
    return kEpilogue == ops::MatmulEpilogue::kBiasGelu ? ctx.output(0) : ctx.input(2);
  }
  cublasLtEpilogue_t EpilogueFor(bool has_bias) const {
    if (gelu_in_epilogue_) {
      if (kEpilogue == ops::MatmulEpilogue::kBiasGelu) return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
      return bias_grad_in_epilogue_ ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
    }
    if (bias_grad_in_epilogue_) return CUBLASLT_EPILOGUE_BGRADA;  // matmul_bgrad
    return has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  }

  bool empty_ = false, zero_k_ = false;
  bool gelu_in_epilogue_ = false;
  bool bias_grad_in_epilogue_ = false;  // DGELU_BGRAD instead of DGELU, or BGRADA
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_layout_ = nullptr, b_layout_ = nullptr, c_layout_ = nullptr;
  cublasLtMatmulAlgo_t algo_;
};

}  // namespace

using ops::MatmulEpilogue;
KILN_REGISTER_FLOAT_KERNELS("matmul", kCUDA, MatmulKernel<MatmulEpilogue::kNone>);
KILN_REGISTER_KERNEL("matmul_bias", kCUDA, kF32, MatmulKernel<MatmulEpilogue::kBias>);
KILN_REGISTER_KERNEL("matmul_bias", kCUDA, kBF16, MatmulKernel<MatmulEpilogue::kBias>);
KILN_REGISTER_KERNEL("matmul_bias_gelu", kCUDA, kF32, MatmulKernel<MatmulEpilogue::kBiasGelu>);
KILN_REGISTER_KERNEL("matmul_bias_gelu", kCUDA, kBF16, MatmulKernel<MatmulEpilogue::kBiasGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu", kCUDA, kF32, MatmulKernel<MatmulEpilogue::kDGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu", kCUDA, kBF16, MatmulKernel<MatmulEpilogue::kDGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu_bgrad", kCUDA, kF32, MatmulKernel<MatmulEpilogue::kDGeluBGrad>);
KILN_REGISTER_KERNEL("matmul_dgelu_bgrad", kCUDA, kBF16, MatmulKernel<MatmulEpilogue::kDGeluBGrad>);
KILN_REGISTER_KERNEL("matmul_bgrad", kCUDA, kF32, MatmulKernel<MatmulEpilogue::kBGrad>);
KILN_REGISTER_KERNEL("matmul_bgrad", kCUDA, kBF16, MatmulKernel<MatmulEpilogue::kBGrad>);

}  // namespace kiln::kernels::cuda
