// rope and the fused attention kernels (forward, backward) against double-precision references on
// every ISA path: grouped-query heads, causal and full masks, head dims 24..128, T not a multiple
// of the tile; rope in place and inverse; thread-count independence of the backward.
#include "engine/ops/attrs/attention.h"

#include <cmath>

#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

struct AttnCase {
  int64_t batch, seq;
  int n_head, n_kv_head, head_dim;
  bool causal;
  float scale;  // 0: 1/sqrt(D)
};

std::ostream& operator<<(std::ostream& os, const AttnCase& c) {
  return os << "B" << c.batch << " T" << c.seq << " H" << c.n_head << " Hkv" << c.n_kv_head << " D"
            << c.head_dim << (c.causal ? " causal" : " full");
}

// Row-major index helpers for the packed layouts.
struct Packed {
  const AttnCase& c;
  int64_t width() const { return int64_t{c.n_head + 2 * c.n_kv_head} * c.head_dim; }
  int64_t q(int64_t b, int64_t t, int64_t h) const {
    return (b * c.seq + t) * width() + h * c.head_dim;
  }
  int64_t k(int64_t b, int64_t t, int64_t g) const { return q(b, t, c.n_head + g); }
  int64_t v(int64_t b, int64_t t, int64_t g) const { return q(b, t, c.n_head + c.n_kv_head + g); }
  int64_t o(int64_t b, int64_t t, int64_t h) const {
    return (b * c.seq + t) * c.n_head * c.head_dim + h * c.head_dim;
  }
};

double Scale(const AttnCase& c) { return c.scale != 0 ? c.scale : 1.0 / std::sqrt(c.head_dim); }

// Probabilities of query (b, h, t) over its visible keys, in double.
std::vector<double> Probs(const AttnCase& c, const std::vector<double>& qkv, int64_t b, int64_t h,
                          int64_t t, double* lse) {
  const Packed p{c};
  const int64_t g = h / (c.n_head / c.n_kv_head);
  const int64_t keys = c.causal ? t + 1 : c.seq;
  std::vector<double> s(keys);
  double mx = -INFINITY;
  for (int64_t j = 0; j < keys; ++j) {
    double dot = 0;
    for (int d = 0; d < c.head_dim; ++d) dot += qkv[p.q(b, t, h) + d] * qkv[p.k(b, j, g) + d];
    s[j] = dot * Scale(c);
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (double& v : s) sum += (v = std::exp(v - mx));
  for (double& v : s) v /= sum;
  if (lse != nullptr) *lse = mx + std::log(sum);
  return s;
}

void ReferenceForward(const AttnCase& c, const std::vector<double>& qkv, std::vector<double>* out,
                      std::vector<double>* lse) {
  const Packed p{c};
  out->assign(c.batch * c.seq * c.n_head * c.head_dim, 0.0);
  lse->assign(c.batch * c.n_head * c.seq, 0.0);
  const int group = c.n_head / c.n_kv_head;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.n_head; ++h) {
      for (int64_t t = 0; t < c.seq; ++t) {
        const std::vector<double> pr =
            Probs(c, qkv, b, h, t, &(*lse)[(b * c.n_head + h) * c.seq + t]);
        for (size_t j = 0; j < pr.size(); ++j) {
          for (int d = 0; d < c.head_dim; ++d) {
            (*out)[p.o(b, t, h) + d] += pr[j] * qkv[p.v(b, j, h / group) + d];
          }
        }
      }
    }
  }
}

std::vector<double> ReferenceBackward(const AttnCase& c, const std::vector<double>& qkv,
                                      const std::vector<double>& dout) {
  const Packed p{c};
  std::vector<double> dqkv(qkv.size(), 0.0);
  const int group = c.n_head / c.n_kv_head;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.n_head; ++h) {
      const int64_t g = h / group;
      for (int64_t t = 0; t < c.seq; ++t) {
        const std::vector<double> pr = Probs(c, qkv, b, h, t, nullptr);
        std::vector<double> dp(pr.size());
        double delta = 0;
        for (size_t j = 0; j < pr.size(); ++j) {
          for (int d = 0; d < c.head_dim; ++d)
            dp[j] += dout[p.o(b, t, h) + d] * qkv[p.v(b, j, g) + d];
          delta += pr[j] * dp[j];
        }
        for (size_t j = 0; j < pr.size(); ++j) {
          const double ds = pr[j] * (dp[j] - delta) * Scale(c);
          for (int d = 0; d < c.head_dim; ++d) {
            dqkv[p.q(b, t, h) + d] += ds * qkv[p.k(b, j, g) + d];
            dqkv[p.k(b, j, g) + d] += ds * qkv[p.q(b, t, h) + d];
            dqkv[p.v(b, j, g) + d] += pr[j] * dout[p.o(b, t, h) + d];
          }
        }
      }
    }
  }
  return dqkv;
}

ops::AttentionAttrs Attrs(const AttnCase& c) {
  return ops::AttentionAttrs{c.n_head, c.n_kv_head, c.head_dim, c.causal, c.scale};
}

const AttnCase kCases[] = {
    {2, 37, 6, 2, 24, true, 0.0f},    // GQA, T below one tile
    {1, 150, 4, 4, 32, true, 0.0f},   // several query tiles, ragged last one
    {1, 70, 2, 1, 64, false, 0.0f},   // full mask, MQA
    {1, 40, 2, 2, 128, true, 0.25f},  // wide heads, explicit scale
    {3, 1, 2, 1, 8, true, 0.0f},      // one token, a head narrower than a vector
    {1, 128, 2, 2, 16, false, 0.0f},  // T an exact multiple of the tile
};

TEST_CASE("attention forward and backward match the reference", "[kernels][attention]") {
  for (const AttnCase& c : kCases) {
    const Shape qkv_shape{c.batch, c.seq, Packed{c}.width()};
    const Shape out_shape{c.batch, c.seq, int64_t{c.n_head} * c.head_dim};
    const Shape lse_shape{c.batch, c.n_head, c.seq};
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const Tensor qkv = RandomTensor(qkv_shape, dtype, 41, -2.0f, 2.0f);
      const Tensor dout = RandomTensor(out_shape, dtype, 42);
      std::vector<double> ref_out, ref_lse;
      ReferenceForward(c, ToDoubles(qkv), &ref_out, &ref_lse);
      const std::vector<double> ref_dqkv = ReferenceBackward(c, ToDoubles(qkv), ToDoubles(dout));
      for (CpuIsa isa : TestIsas()) {
        IsaScope scope(isa);
        INFO(c << " " << dtype << " " << CpuIsaName(isa));
        const std::vector<Tensor> fwd = RunKernel(
            "attention", dtype, {qkv},
            {Tensor::Zeros(out_shape, dtype), Tensor::Zeros(lse_shape, DType::kF32)}, Attrs(c));
        KILN_REQUIRE_CLOSE(fwd[0].ToFloats(), ToFloatVector(ref_out), Tolerance(dtype));
        KILN_REQUIRE_CLOSE(fwd[1].ToFloats(), ToFloatVector(ref_lse), kTolF32);
        Tensor dqkv[2];
        for (int threads : {1, 2}) {
          ThreadScope ts(threads);
          dqkv[threads - 1] = RunKernel("attention_backward", dtype, {dout, qkv, fwd[0], fwd[1]},
                                        {Tensor::Zeros(qkv_shape, dtype)}, Attrs(c))[0];
        }
        KILN_REQUIRE_CLOSE(dqkv[0].ToFloats(), ToFloatVector(ref_dqkv), Tolerance(dtype));
        REQUIRE(BitEqual(dqkv[0], dqkv[1]));
      }
    }
  }
}

TEST_CASE("attention is stable with large scores", "[kernels][attention]") {
  const AttnCase c{1, 37, 2, 1, 24, true, 0.0f};
  const Tensor qkv = RandomTensor({1, 37, Packed{c}.width()}, DType::kF32, 43, -30.0f, 30.0f);
  std::vector<double> ref_out, ref_lse;
  ReferenceForward(c, ToDoubles(qkv), &ref_out, &ref_lse);
  const std::vector<Tensor> fwd = RunKernel(
      "attention", DType::kF32, {qkv},
      {Tensor::Zeros({1, 37, 48}, DType::kF32), Tensor::Zeros({1, 2, 37}, DType::kF32)}, Attrs(c));
  KILN_REQUIRE_CLOSE(fwd[0].ToFloats(), ToFloatVector(ref_out), kTolF32);
  KILN_REQUIRE_CLOSE(fwd[1].ToFloats(), ToFloatVector(ref_lse), kTolF32);
}

// Hugging Face rotate-half rotary embedding on the q and k heads, v untouched.
std::vector<double> ReferenceRope(const AttnCase& c, const std::vector<double>& x, float theta,
                                  bool inverse) {
  const Packed p{c};
  std::vector<double> y = x;
  const int half = c.head_dim / 2;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < c.seq; ++t) {
      for (int64_t h = 0; h < c.n_head + c.n_kv_head; ++h) {
        const int64_t base = p.q(b, t, h);
        for (int i = 0; i < half; ++i) {
          const double angle = t * std::pow(double{theta}, -2.0 * i / c.head_dim);
          const double cs = std::cos(angle), sn = (inverse ? -1 : 1) * std::sin(angle);
          const double x1 = x[base + i], x2 = x[base + half + i];
          y[base + i] = x1 * cs - x2 * sn;
          y[base + half + i] = x2 * cs + x1 * sn;
        }
      }
    }
  }
  return y;
}

TEST_CASE("rope matches the rotate-half reference, in place and inverted", "[kernels][rope]") {
  const AttnCase c{2, 37, 6, 2, 24, true, 0.0f};
  const Shape shape{c.batch, c.seq, Packed{c}.width()};
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool inverse : {false, true}) {
        INFO(CpuIsaName(isa) << " " << dtype << (inverse ? " inverse" : ""));
        const ops::RopeAttrs attrs{c.n_head, c.n_kv_head, c.head_dim, 500.0f, inverse};
        const Tensor x = RandomTensor(shape, dtype, 44);
        const Tensor y = RunKernel("rope", dtype, {x}, {Tensor::Zeros(shape, dtype)}, attrs)[0];
        KILN_REQUIRE_CLOSE(y.ToFloats(),
                           ToFloatVector(ReferenceRope(c, ToDoubles(x), 500.0f, inverse)),
                           Tolerance(dtype));
        const Tensor in_place = x.Clone();
        RunKernel("rope", dtype, {in_place}, {in_place}, attrs);
        REQUIRE(BitEqual(in_place, y));
      }
    }
    // The inverse undoes the rotation.
    const Tensor x = RandomTensor(shape, DType::kF32, 45);
    const Tensor y = RunKernel("rope", DType::kF32, {x}, {Tensor::Zeros(shape, DType::kF32)},
                               ops::RopeAttrs{c.n_head, c.n_kv_head, c.head_dim, 1e4f, false})[0];
    const Tensor back = RunKernel("rope", DType::kF32, {y}, {Tensor::Zeros(shape, DType::kF32)},
                                  ops::RopeAttrs{c.n_head, c.n_kv_head, c.head_dim, 1e4f, true})[0];
    KILN_REQUIRE_CLOSE(back.ToFloats(), x.ToFloats(), kTolF32);
  }
}

}  // namespace
}  // namespace kiln::testing
