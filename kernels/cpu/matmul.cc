// CPU matmul through oneDNN's matmul primitive, created once per node in Prepare for the bound
// shapes (transposes are strides, never copies) and run from Run with a user scratchpad taken
// from the workspace. f32 and bf16 (f32 accumulation; AMX where present) run natively; f16 runs
// natively where oneDNN has an optimized f16 matmul, else through f32 copies in the workspace.
// The fused forms (engine/ops/attrs/matmul.h) are the same primitive (with oneDNN's bias for
// matmul_bias and matmul_bias_gelu) followed by the element-wise gelu / gelu_backward body over the
// stored product, and for matmul_dgelu_bgrad / matmul_bgrad sum_to's column sums of the result /
// of b: exactly the unfused ops' results, which is what the reference must be.
#include "engine/ops/attrs/matmul.h"

#include <dnnl.hpp>

#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/kernel_util.h"

namespace kiln::kernels::cpu {
namespace {

using dnnl::memory;

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// The operands as oneDNN memory descriptors over the caller's (contiguous) buffers; `bias` is
// set for the bias epilogues (input 2, (N), broadcast over rows).
struct MatmulDescs {
  memory::desc a, b, c, bias;
};

// Note [Matmul as oneDNN strides]
// a (..., M, K) (or (..., K, M) with trans_a) and b (K, N) (or (N, K) with trans_b) become
// descriptors whose strides express the transposes. With a shared 2-D b and no trans_a, the
// leading axes of a fold into rows: one (batch*M, K) x (K, N) matmul, the shape oneDNN runs best.
// Otherwise it is a 3-D batched matmul, with b's batch dim of size 1 broadcast when b is shared.
MatmulDescs DescribeMatmul(const KernelContext& ctx, memory::data_type dt,
                           ops::MatmulEpilogue epilogue) {
  const auto& attrs = ctx.attrs_as<ops::MatmulAttrs>();
  const MatmulShape s = CheckMatmul(ctx, DeviceType::kCPU, epilogue);
  const int64_t batch = s.batch, m = s.m, k = s.k, n = s.n;
  const bool b_batched = s.b_batched, has_bias = s.has_bias();
  MatmulDescs d;
  if (!b_batched && !attrs.trans_a) {
    d.a = memory::desc({batch * m, k}, dt, memory::dims{k, 1});
    d.b = memory::desc({k, n}, dt, attrs.trans_b ? memory::dims{1, k} : memory::dims{n, 1});
    d.c = memory::desc({batch * m, n}, dt, memory::dims{n, 1});
    if (has_bias) d.bias = memory::desc({1, n}, dt, memory::dims{n, 1});
    return d;
  }
  d.a = memory::desc({batch, m, k}, dt,
                     attrs.trans_a ? memory::dims{m * k, 1, m} : memory::dims{m * k, k, 1});
  d.b = memory::desc({b_batched ? batch : 1, k, n}, dt,
                     attrs.trans_b ? memory::dims{k * n, 1, k} : memory::dims{k * n, n, 1});
  d.c = memory::desc({batch, m, n}, dt, memory::dims{m * n, n, 1});
  if (has_bias) d.bias = memory::desc({1, 1, n}, dt, memory::dims{n, n, 1});
  return d;
}

dnnl::matmul::primitive_desc MakePrimitiveDesc(const MatmulDescs& d) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (d.bias.get_size() > 0) {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(d.a, d.b, d.bias, d.c), attr,
                                        CpuEngine());
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(d.a, d.b, d.c), attr, CpuEngine());
}

// The oneDNN type the product runs in. f16 runs natively only where oneDNN has an optimized f16
// matmul for this CPU (not 2.6: it has none, and a reference kernel would be far slower than
// converting); otherwise it runs in f32 on copies (see Note [Matmul in f16]).
memory::data_type ComputeType(const KernelContext& ctx, ops::MatmulEpilogue epilogue) {
  switch (ctx.input(0).dtype()) {
    case DType::kBF16:
      return memory::data_type::bf16;
    case DType::kF16:
      break;
    default:
      return memory::data_type::f32;
  }
  try {
    const dnnl::matmul::primitive_desc pd =
        MakePrimitiveDesc(DescribeMatmul(ctx, memory::data_type::f16, epilogue));
    if (std::string(pd.impl_info_str()).rfind("ref", 0) != 0) return memory::data_type::f16;
  } catch (const dnnl::error&) {
    // No f16 implementation at all.
  }
  return memory::data_type::f32;
}

// Note [Matmul in f16]
// oneDNN 2.6 has no f16 matmul on CPU. An f16 node then converts a and b into f32 copies in its
// workspace, multiplies in f32 and rounds the f32 result into out: exact inputs, f32 accumulation,
// one rounding, like the bf16 path. The extra traffic is small next to the product.
size_t Align64(size_t bytes) { return (bytes + 63) / 64 * 64; }

template <ops::MatmulEpilogue kEpilogue>
class MatmulKernel final : public Kernel {
 public:
  size_t WorkspaceBytes(const KernelContext& ctx) const override {
    const memory::data_type type = ComputeType(ctx, kEpilogue);
    const MatmulDescs d = DescribeMatmul(ctx, type, kEpilogue);
    return Layout(ctx, type, MakePrimitiveDesc(d).scratchpad_desc().get_size()).total;
  }

  absl::Status Prepare(const KernelContext& ctx) override {
    const DType dtype = ctx.input(0).dtype();  // DescribeMatmul checks the contract
    try {
      const memory::data_type type = ComputeType(ctx, kEpilogue);
      convert_f16_ = dtype == DType::kF16 && type == memory::data_type::f32;
      const MatmulDescs d = DescribeMatmul(ctx, type, kEpilogue);
      const dnnl::matmul::primitive_desc pd = MakePrimitiveDesc(d);
      primitive_ = dnnl::matmul(pd);
      stream_ = dnnl::stream(CpuEngine());
      // Handles are set in every Run: the buffers may move between steps.
      a_ = memory(d.a, CpuEngine(), DNNL_MEMORY_NONE);
      b_ = memory(d.b, CpuEngine(), DNNL_MEMORY_NONE);
      c_ = memory(d.c, CpuEngine(), DNNL_MEMORY_NONE);
      const size_t scratch_bytes = pd.scratchpad_desc().get_size();
      layout_ = Layout(ctx, type, scratch_bytes);
      num_args_ = 3;
      args_[0] = {DNNL_ARG_SRC, a_.get()};
      args_[1] = {DNNL_ARG_WEIGHTS, b_.get()};
      args_[2] = {DNNL_ARG_DST, c_.get()};
      if (d.bias.get_size() > 0) {
        KILN_CHECK(!convert_f16_) << "a bias epilogue in f16 is not fused (see FuseMatmulBias)";
        bias_ = memory(d.bias, CpuEngine(), DNNL_MEMORY_NONE);
        args_[num_args_++] = {DNNL_ARG_BIAS, bias_.get()};
      }
      if (scratch_bytes > 0) {
        scratch_ = memory(pd.scratchpad_desc(), CpuEngine(), DNNL_MEMORY_NONE);
        args_[num_args_++] = {DNNL_ARG_SCRATCHPAD, scratch_.get()};
      }
    } catch (const dnnl::error& e) {
      return absl::InternalError(std::string("matmul: oneDNN could not build the primitive: ") +
                                 e.what());
    }
    return absl::OkStatus();
  }

  void Run(const KernelContext& ctx) override {
    KILN_CHECK(primitive_) << "matmul ran before Prepare";
    KILN_CHECK(ctx.workspace_bytes >= layout_.total) << "matmul workspace";
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    const Tensor& c = ctx.output(0);
    char* ws = static_cast<char*>(ctx.workspace);
    void* a_data = a.raw_data();
    void* b_data = b.raw_data();
    void* c_data = c.raw_data();
    if (convert_f16_) {
      a_data = ws + layout_.a_f32;
      b_data = ws + layout_.b_f32;
      c_data = ws + layout_.c_f32;
      Isa().unary({UnaryOp::kScale, DType::kF16, DType::kF32, a.raw_data(), a_data, a.numel()});
      Isa().unary({UnaryOp::kScale, DType::kF16, DType::kF32, b.raw_data(), b_data, b.numel()});
    }
    SetHandle(a_, a_data);
    SetHandle(b_, b_data);
    SetHandle(c_, c_data);
    if (bias_) SetHandle(bias_, ctx.input(2).raw_data());
    if (scratch_) SetHandle(scratch_, ws + layout_.scratch);
    // The C API takes our prebuilt argument array; the C++ execute() would build a map per call.
    CheckDnnl(dnnl_primitive_execute(primitive_.get(), stream_.get(), num_args_, args_));
    CheckDnnl(dnnl_stream_wait(stream_.get()));
    if (convert_f16_) {
      Isa().unary({UnaryOp::kScale, DType::kF32, DType::kF16, c_data, c.raw_data(), c.numel()});
    }
    const DType dtype = c.dtype();
    if constexpr (kEpilogue == ops::MatmulEpilogue::kBiasGelu) {  // c is pre; y = gelu(pre)
      Isa().unary(
          {UnaryOp::kGelu, dtype, dtype, c.raw_data(), ctx.output(1).raw_data(), c.numel()});
    } else if constexpr (kEpilogue == ops::MatmulEpilogue::kDGelu ||
                         kEpilogue == ops::MatmulEpilogue::kDGeluBGrad) {  // c = c * gelu'(pre)
      Isa().binary({BinaryOp::kGeluBackward, dtype, dtype, c.raw_data(), ctx.input(2).raw_data(),
                    c.raw_data(), c.numel(), c.numel()});
    }
    if constexpr (kBiasGrad) {  // column sums of c (matmul_dgelu_bgrad) or of b (matmul_bgrad)
      const Tensor& summed = SummedForBiasGrad(ctx);
      const int64_t cols = summed.size(-1);
      if (cols > 0) {
        Isa().sum_to({dtype, summed.raw_data(), summed.numel() / cols, cols,
                      ctx.output(1).raw_data(),
                      reinterpret_cast<float*>(ws + layout_.sum_partials)});
      }
    }
  }

 private:
  static constexpr bool kBiasGrad =
      kEpilogue == ops::MatmulEpilogue::kDGeluBGrad || kEpilogue == ops::MatmulEpilogue::kBGrad;
  // The matrix whose column sums are the bias gradient: the result, or matmul_bgrad's b.
  static const Tensor& SummedForBiasGrad(const KernelContext& ctx) {
    return kEpilogue == ops::MatmulEpilogue::kBGrad ? ctx.input(1) : ctx.output(0);
  }

  // Byte offsets into the workspace: the oneDNN scratchpad, then (f16 run as f32) f32 copies.
  struct WorkspaceLayout {
    size_t scratch = 0, a_f32 = 0, b_f32 = 0, c_f32 = 0, sum_partials = 0, total = 0;
  };

  static WorkspaceLayout Layout(const KernelContext& ctx, memory::data_type type,
                                size_t scratch_bytes) {
    WorkspaceLayout l;
    l.total = Align64(scratch_bytes);
    if (ctx.input(0).dtype() == DType::kF16 && type == memory::data_type::f32) {
      l.a_f32 = l.total;
      l.total += Align64(ctx.input(0).numel() * sizeof(float));
      l.b_f32 = l.total;
      l.total += Align64(ctx.input(1).numel() * sizeof(float));
      l.c_f32 = l.total;
      l.total += Align64(ctx.output(0).numel() * sizeof(float));
    }
    if (kBiasGrad) {  // sum_to's partial column sums
      const Tensor& summed = SummedForBiasGrad(ctx);
      const int64_t cols = summed.size(-1);
      const int64_t rows = cols == 0 ? 0 : summed.numel() / cols;
      l.sum_partials = l.total;
      l.total += Align64(static_cast<size_t>(SumToWorkspaceFloats(rows, cols)) * sizeof(float));
    }
    return l;
  }

  static void CheckDnnl(dnnl_status_t status) {
    KILN_CHECK(status == dnnl_success) << "oneDNN matmul failed with status " << status;
  }
  static void SetHandle(const memory& m, void* data) {
    CheckDnnl(dnnl_memory_set_data_handle(m.get(), data));
  }

  bool convert_f16_ = false;
  dnnl::matmul primitive_;
  dnnl::stream stream_;
  memory a_, b_, c_, bias_, scratch_;
  dnnl_exec_arg_t args_[5] = {};
  int num_args_ = 0;
  WorkspaceLayout layout_;
};

}  // namespace

using ops::MatmulEpilogue;
KILN_REGISTER_FLOAT_KERNELS("matmul", kCPU, MatmulKernel<MatmulEpilogue::kNone>);
// The fusion passes fuse f32 and bf16 only (f16 runs as f32 copies here, see Note [Matmul in f16]).
KILN_REGISTER_KERNEL("matmul_bias", kCPU, kF32, MatmulKernel<MatmulEpilogue::kBias>);
KILN_REGISTER_KERNEL("matmul_bias", kCPU, kBF16, MatmulKernel<MatmulEpilogue::kBias>);
KILN_REGISTER_KERNEL("matmul_bias_gelu", kCPU, kF32, MatmulKernel<MatmulEpilogue::kBiasGelu>);
KILN_REGISTER_KERNEL("matmul_bias_gelu", kCPU, kBF16, MatmulKernel<MatmulEpilogue::kBiasGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu", kCPU, kF32, MatmulKernel<MatmulEpilogue::kDGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu", kCPU, kBF16, MatmulKernel<MatmulEpilogue::kDGelu>);
KILN_REGISTER_KERNEL("matmul_dgelu_bgrad", kCPU, kF32, MatmulKernel<MatmulEpilogue::kDGeluBGrad>);
KILN_REGISTER_KERNEL("matmul_dgelu_bgrad", kCPU, kBF16, MatmulKernel<MatmulEpilogue::kDGeluBGrad>);
KILN_REGISTER_KERNEL("matmul_bgrad", kCPU, kF32, MatmulKernel<MatmulEpilogue::kBGrad>);
KILN_REGISTER_KERNEL("matmul_bgrad", kCPU, kBF16, MatmulKernel<MatmulEpilogue::kBGrad>);

}  // namespace kiln::kernels::cpu
