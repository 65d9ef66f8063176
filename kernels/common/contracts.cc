// The shared contract checks of kernels/common/contracts.h.
#include "kernels/common/contracts.h"

#include <cmath>

#include "engine/core/status.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/matmul.h"

namespace kiln::kernels {
namespace {

std::string_view DeviceName(DeviceType device) {
  return device == DeviceType::kCPU ? "CPU" : "CUDA";
}

// The f32 (C) parameters and (rows) statistics of a norm against x.
void CheckNormTensors(DeviceType device, const Tensor& x,
                      std::initializer_list<const Tensor*> params,
                      std::initializer_list<const Tensor*> stats) {
  for (const Tensor* p : params) {
    CheckTensorOn(*p, device, DType::kF32, "norm parameter");
    KILN_CHECK_EQ(p->numel(), LastDim(x));
  }
  for (const Tensor* s : stats) {
    CheckTensorOn(*s, device, DType::kF32, "norm statistic");
    KILN_CHECK_EQ(s->numel(), Rows(x));
  }
}

}  // namespace

void CheckTensorOn(const Tensor& t, DeviceType device, DType dtype, std::string_view what) {
  KILN_CHECK(t.defined() && t.device().type == device && t.is_contiguous())
      << what << " must be a contiguous " << DeviceName(device) << " tensor";
  KILN_CHECK(t.dtype() == dtype) << what << " is " << t.dtype() << ", expected " << dtype;
}

void CheckSameShape(const Tensor& a, const Tensor& b, std::string_view what) {
  KILN_CHECK(a.sizes() == b.sizes())
      << what << ": " << ShapeToString(a.sizes()) << " vs " << ShapeToString(b.sizes());
}

void CheckPacked(const Tensor& t, int64_t width, std::string_view what) {
  KILN_CHECK(t.dim() == 3 && t.size(2) == width)
      << what << " must be (B, T, " << width << "), got " << ShapeToString(t.sizes());
}

void CheckActivation(const KernelContext& ctx, DeviceType device) {
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  CheckTensorOn(x, device, x.dtype(), "activation input");
  CheckTensorOn(y, device, x.dtype(), "activation output");
  CheckSameShape(x, y, "activation");
}

void CheckScale(const KernelContext& ctx, DeviceType device, ScaleOp op) {
  const Tensor& x = ctx.input(0);
  const Tensor& y = ctx.output(0);
  CheckTensorOn(x, device, x.dtype(), "scale input");
  const DType y_dtype = op == ScaleOp::kCast ? ctx.attrs_as<ops::CastAttrs>().dtype : x.dtype();
  CheckTensorOn(y, device, y_dtype, "scale output");
  KILN_CHECK_EQ(x.numel(), y.numel());
  if (op == ScaleOp::kScaleBy) {
    const Tensor& s = ctx.input(1);  // [1] f32
    CheckTensorOn(s, device, DType::kF32, "scale_by s");
    KILN_CHECK_EQ(s.numel(), 1);
  }
}

void CheckBinary(const KernelContext& ctx, DeviceType device, bool is_add) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const Tensor& out = ctx.output(0);
  CheckTensorOn(a, device, a.dtype(), "first input");
  CheckTensorOn(out, device, a.dtype(), "output");
  CheckSameShape(a, out, "output");
  if (is_add) {
    CheckTensorOn(b, device, b.dtype(), "second input");
    KILN_CHECK(b.dim() <= a.dim()) << "add: b must be a suffix of a";
    for (int i = 1; i <= b.dim(); ++i) {
      KILN_CHECK_EQ(b.size(-i), a.size(-i)) << "add: b's shape must be a suffix of a's";
    }
  } else {
    CheckTensorOn(b, device, a.dtype(), "second input");
    CheckSameShape(a, b, "inputs");
  }
}

MatmulShape CheckMatmul(const KernelContext& ctx, DeviceType device, ops::MatmulEpilogue epilogue) {
  const auto& attrs = ctx.attrs_as<ops::MatmulAttrs>();
  const Tensor& a = ctx.input(0);     // (..., M, K), trans_a: (..., K, M)
  const Tensor& b = ctx.input(1);     // (K, N) or (..., K, N), trans_b: (N, K) or (..., N, K)
  const Tensor& out = ctx.output(0);  // (..., M, N)
  const DType dtype = a.dtype();
  CheckTensorOn(a, device, dtype, "matmul a");
  CheckTensorOn(b, device, dtype, "matmul b");
  CheckTensorOn(out, device, dtype, "matmul out");
  KILN_CHECK(a.dim() >= 2 && (b.dim() == 2 || b.dim() == a.dim()))
      << "matmul: a " << ShapeToString(a.sizes()) << ", b " << ShapeToString(b.sizes());
  MatmulShape s;
  s.m = attrs.trans_a ? a.size(-1) : a.size(-2);
  s.k = attrs.trans_a ? a.size(-2) : a.size(-1);
  s.n = attrs.trans_b ? b.size(-2) : b.size(-1);
  KILN_CHECK_EQ(attrs.trans_b ? b.size(-1) : b.size(-2), s.k)
      << "matmul inner dimensions: a " << ShapeToString(a.sizes()) << ", b "
      << ShapeToString(b.sizes());
  s.b_batched = b.dim() > 2;
  s.batch = 1;
  Shape expected_out;
  for (int i = 0; i < a.dim() - 2; ++i) {
    if (s.b_batched) {
      KILN_CHECK_EQ(a.size(i), b.size(i)) << "matmul batch dims: a " << ShapeToString(a.sizes())
                                          << ", b " << ShapeToString(b.sizes());
    }
    s.batch *= a.size(i);
    expected_out.push_back(a.size(i));
  }
  expected_out.push_back(s.m);
  expected_out.push_back(s.n);
  KILN_CHECK(out.sizes() == expected_out) << "matmul out " << ShapeToString(out.sizes())
                                          << ", expected " << ShapeToString(expected_out);
  s.epilogue = epilogue;
  const bool three_inputs =
      epilogue != ops::MatmulEpilogue::kNone && epilogue != ops::MatmulEpilogue::kBGrad;
  KILN_CHECK_EQ(ctx.num_inputs, three_inputs ? 3 : 2) << "matmul inputs";
  const bool two_outputs = epilogue == ops::MatmulEpilogue::kBiasGelu || s.bias_grad();
  KILN_CHECK_EQ(ctx.num_outputs, two_outputs ? 2 : 1) << "matmul outputs";
  if (s.has_bias()) {
    const Tensor& bias = ctx.input(2);  // (N)
    CheckTensorOn(bias, device, dtype, "matmul bias");
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == s.n)
        << "matmul: bias " << ShapeToString(bias.sizes()) << " for N = " << s.n;
  }
  if (epilogue == ops::MatmulEpilogue::kBiasGelu) {  // output 0 is pre, output 1 y = gelu(pre)
    CheckTensorOn(ctx.output(1), device, dtype, "matmul_bias_gelu y");
    CheckSameShape(ctx.output(1), out, "matmul_bias_gelu y and pre");
  }
  if (s.dgelu()) {
    CheckTensorOn(ctx.input(2), device, dtype, "matmul_dgelu pre");
    CheckSameShape(ctx.input(2), out, "matmul_dgelu pre and out");
  }
  if (epilogue == ops::MatmulEpilogue::kBGrad) {  // the row sums of b (K, N)
    KILN_CHECK(!attrs.trans_b && !s.b_batched) << "matmul_bgrad: b " << ShapeToString(b.sizes());
  }
  if (s.bias_grad()) {
    const Tensor& dbias = ctx.output(1);  // (N)
    CheckTensorOn(dbias, device, dtype, "matmul bias gradient");
    KILN_CHECK(dbias.dim() == 1 && dbias.size(0) == s.n)
        << "matmul: bias gradient " << ShapeToString(dbias.sizes()) << " for N = " << s.n;
  }
  return s;
}

void CheckNorm(const KernelContext& ctx, DeviceType device, bool rms) {
  const Tensor& x = ctx.input(0);  // (..., C)
  const Tensor& y = ctx.output(0);
  CheckTensorOn(x, device, x.dtype(), "norm input");
  CheckTensorOn(y, device, x.dtype(), "norm output");
  CheckSameShape(x, y, "norm");
  if (rms) {
    CheckNormTensors(device, x, {&ctx.input(1)}, {&ctx.output(1)});
  } else {
    CheckNormTensors(device, x, {&ctx.input(1), &ctx.input(2)}, {&ctx.output(1), &ctx.output(2)});
  }
}

void CheckNormBackward(const KernelContext& ctx, DeviceType device, bool rms) {
  const Tensor& dy = ctx.input(0);  // (..., C)
  const Tensor& x = ctx.input(1);   // (..., C)
  const Tensor& dx = ctx.output(0);
  CheckTensorOn(dy, device, dy.dtype(), "norm backward dy");
  CheckTensorOn(x, device, dy.dtype(), "norm backward x");
  CheckTensorOn(dx, device, dy.dtype(), "norm backward dx");
  CheckSameShape(dy, x, "norm backward");
  CheckSameShape(dy, dx, "norm backward");
  if (rms) {
    CheckNormTensors(device, x, {&ctx.input(2), &ctx.output(1)}, {&ctx.input(3)});
  } else {
    CheckNormTensors(device, x, {&ctx.input(2), &ctx.output(1), &ctx.output(2)},
                     {&ctx.input(3), &ctx.input(4)});
  }
  const int inputs = rms ? 4 : 5;
  KILN_CHECK(ctx.num_inputs == inputs || ctx.num_inputs == inputs + 1)
      << "norm backward inputs: " << ctx.num_inputs;
  if (ctx.num_inputs == inputs + 1) {  // the _add form's residual gradient
    const Tensor& residual = ctx.input(inputs);
    CheckTensorOn(residual, device, dy.dtype(), "norm backward residual");
    CheckSameShape(dy, residual, "norm backward residual");
  }
}

CrossEntropyShape CheckCrossEntropy(const KernelContext& ctx, DeviceType device) {
  const Tensor& logits = ctx.input(0);    // (..., V)
  const Tensor& targets = ctx.input(1);   // (...) i32
  const Tensor& loss = ctx.output(0);     // [1] f32
  const Tensor& dlogits = ctx.output(1);  // (..., V)
  CheckTensorOn(logits, device, logits.dtype(), "cross_entropy logits");
  CheckTensorOn(targets, device, DType::kI32, "cross_entropy targets");
  CheckTensorOn(loss, device, DType::kF32, "cross_entropy loss");
  CheckTensorOn(dlogits, device, logits.dtype(), "cross_entropy dlogits");
  CheckSameShape(logits, dlogits, "cross_entropy dlogits");
  KILN_CHECK_EQ(loss.numel(), 1);
  CrossEntropyShape s{Rows(logits), LastDim(logits), ctx.num_inputs == 3};
  KILN_CHECK_EQ(targets.numel(), s.rows);
  if (s.scaled) {
    CheckTensorOn(ctx.input(2), device, DType::kF32, "cross_entropy_scaled scale");
    KILN_CHECK_EQ(ctx.input(2).numel(), 1);
  }
  return s;
}

EmbeddingShape CheckEmbedding(const KernelContext& ctx, DeviceType device) {
  const Tensor& table = ctx.input(0);  // (V, C)
  const Tensor& ids = ctx.input(1);    // (...) i32
  const Tensor& out = ctx.output(0);   // (..., C)
  CheckTensorOn(table, device, table.dtype(), "embedding table");
  CheckTensorOn(ids, device, DType::kI32, "embedding ids");
  CheckTensorOn(out, device, table.dtype(), "embedding output");
  KILN_CHECK_EQ(table.dim(), 2);
  EmbeddingShape s{ids.numel(), table.size(0), table.size(1)};
  KILN_CHECK_EQ(out.numel(), s.n * s.cols);
  return s;
}

EmbeddingShape CheckEmbeddingBackward(const KernelContext& ctx, DeviceType device) {
  const Tensor& dy = ctx.input(0);       // (..., C)
  const Tensor& ids = ctx.input(1);      // (...) i32
  const Tensor& dtable = ctx.output(0);  // (V, C) f32
  CheckTensorOn(dy, device, dy.dtype(), "embedding_backward dy");
  CheckTensorOn(ids, device, DType::kI32, "embedding_backward ids");
  CheckTensorOn(dtable, device, DType::kF32, "embedding_backward dtable");
  KILN_CHECK_EQ(dtable.dim(), 2);
  EmbeddingShape s{ids.numel(), dtable.size(0), dtable.size(1)};
  const int64_t attr_vocab = ctx.attrs_as<ops::EmbeddingAttrs>().vocab_size;
  KILN_CHECK(attr_vocab == 0 || attr_vocab == s.vocab) << "dtable rows " << s.vocab;
  KILN_CHECK_EQ(dy.numel(), s.n * s.cols);
  return s;
}

void CheckSumTo(const KernelContext& ctx, DeviceType device) {
  const Tensor& dy = ctx.input(0);
  const Tensor& out = ctx.output(0);
  CheckTensorOn(dy, device, dy.dtype(), "sum_to input");
  CheckTensorOn(out, device, dy.dtype(), "sum_to output");
  const Shape& shape = ctx.attrs_as<ops::SumToAttrs>().shape;
  KILN_CHECK(out.sizes() == shape) << "sum_to output " << ShapeToString(out.sizes());
  KILN_CHECK(static_cast<int>(shape.size()) <= dy.dim()) << "sum_to target longer than input";
  for (int i = 1; i <= static_cast<int>(shape.size()); ++i) {
    KILN_CHECK_EQ(shape[shape.size() - i], dy.size(-i)) << "sum_to target is not a suffix";
  }
}

absl::Status CheckRopeAttrs(const ops::RopeAttrs& attrs) {
  if (attrs.head_dim % 2 != 0 || attrs.n_kv_head <= 0 || attrs.n_head % attrs.n_kv_head != 0) {
    return absl::InvalidArgumentError(
        "rope: head_dim must be even, n_head a multiple of n_kv_head");
  }
  return absl::OkStatus();
}

void CheckRope(const KernelContext& ctx, DeviceType device) {
  const auto& attrs = ctx.attrs_as<ops::RopeAttrs>();
  const Tensor& x = ctx.input(0);   // (B, T, (H + 2 Hkv) D)
  const Tensor& y = ctx.output(0);  // (B, T, (H + 2 Hkv) D)
  CheckTensorOn(x, device, x.dtype(), "rope input");
  CheckTensorOn(y, device, x.dtype(), "rope output");
  CheckSameShape(x, y, "rope");
  CheckPacked(x, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
              "rope qkv");
}

void BuildRopeTables(const ops::RopeAttrs& attrs, int64_t seq, std::vector<float>* cos,
                     std::vector<float>* sin) {
  const int64_t half = attrs.head_dim / 2;
  cos->resize(static_cast<size_t>(seq * half));
  sin->resize(cos->size());
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(attrs.head_dim);
    const float inv_freq = 1.0f / std::pow(attrs.theta, exponent);
    for (int64_t t = 0; t < seq; ++t) {
      const float angle = static_cast<float>(t) * inv_freq;
      (*cos)[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      (*sin)[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

AttentionGeometry CheckAttention(const KernelContext& ctx, DeviceType device, bool backward) {
  const auto& attrs = ctx.attrs_as<ops::AttentionAttrs>();
  KILN_CHECK(attrs.n_kv_head > 0 && attrs.n_head % attrs.n_kv_head == 0 && attrs.head_dim > 0)
      << "attention: n_head " << attrs.n_head << " must be a multiple of n_kv_head "
      << attrs.n_kv_head;
  const Tensor& qkv = ctx.input(backward ? 1 : 0);
  CheckTensorOn(qkv, device, qkv.dtype(), "attention qkv");
  CheckPacked(qkv, static_cast<int64_t>(attrs.n_head + 2 * attrs.n_kv_head) * attrs.head_dim,
              "attention qkv");
  AttentionGeometry g;
  g.batch = qkv.size(0);
  g.seq = qkv.size(1);
  g.n_head = attrs.n_head;
  g.n_kv_head = attrs.n_kv_head;
  g.head_dim = attrs.head_dim;
  g.causal = attrs.causal;
  g.scale =
      attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(attrs.head_dim));
  const Shape out_shape{g.batch, g.seq, int64_t{g.n_head} * g.head_dim};
  const Shape lse_shape{g.batch, g.n_head, g.seq};
  const Tensor& out = backward ? ctx.input(2) : ctx.output(0);
  const Tensor& lse = backward ? ctx.input(3) : ctx.output(1);
  CheckTensorOn(out, device, qkv.dtype(), "attention out");
  CheckTensorOn(lse, device, DType::kF32, "attention lse");
  KILN_CHECK(out.sizes() == out_shape) << "attention out " << ShapeToString(out.sizes());
  KILN_CHECK(lse.sizes() == lse_shape) << "attention lse " << ShapeToString(lse.sizes());
  if (backward) {
    const Tensor& dout = ctx.input(0);
    const Tensor& dqkv = ctx.output(0);
    CheckTensorOn(dout, device, qkv.dtype(), "attention_backward dout");
    CheckTensorOn(dqkv, device, qkv.dtype(), "attention_backward dqkv");
    CheckSameShape(dout, out, "attention_backward dout");
    CheckSameShape(dqkv, qkv, "attention_backward dqkv");
  }
  return g;
}

}  // namespace kiln::kernels
