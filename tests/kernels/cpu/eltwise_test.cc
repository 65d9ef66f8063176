// Element-wise CPU kernels against double-precision references, for every dtype and every ISA
// path: activations and their backwards, SwiGLU, add (suffix broadcast, mixed dtypes, in place),
// mul, scale, scale_by, cast (bit-exact rounding), accumulate_grad, broadcast_scalar and dropout.
#include <cmath>
#include <functional>

#include "engine/core/rng.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
// Odd on purpose: not a multiple of any vector width, and above the parallel grain.
const Shape kShape{301, 129};

double GeluRef(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}
double GeluGradRef(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  const double t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}
double SigmoidRef(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double SiluRef(double x) { return x * SigmoidRef(x); }
double SiluGradRef(double x) {
  const double s = SigmoidRef(x);
  return s * (1.0 + x * (1.0 - s));
}

// y = f(x) for op on every ISA and dtype.
void CheckUnary(const std::string& op, const std::function<double(double)>& f, float lo, float hi) {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(op << " " << CpuIsaName(isa) << " " << dtype);
      const Tensor x = RandomTensor(kShape, dtype, 1, lo, hi);
      const Tensor y = RunKernel(op, dtype, {x}, {Tensor::Zeros(kShape, dtype)})[0];
      std::vector<double> ref = ToDoubles(x);
      for (double& v : ref) v = f(v);
      KILN_REQUIRE_CLOSE(y.ToFloats(), ToFloatVector(ref), Tolerance(dtype));
    }
  }
}

// dx = dy * f'(x) for op on every ISA and dtype.
void CheckActivationBackward(const std::string& op, const std::function<double(double)>& grad,
                             float lo, float hi) {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(op << " " << CpuIsaName(isa) << " " << dtype);
      const Tensor dy = RandomTensor(kShape, dtype, 2);
      const Tensor x = RandomTensor(kShape, dtype, 3, lo, hi);
      const Tensor dx = RunKernel(op, dtype, {dy, x}, {Tensor::Zeros(kShape, dtype)})[0];
      const std::vector<double> d = ToDoubles(dy), xv = ToDoubles(x);
      std::vector<float> ref(d.size());
      for (size_t i = 0; i < d.size(); ++i) ref[i] = static_cast<float>(d[i] * grad(xv[i]));
      KILN_REQUIRE_CLOSE(dx.ToFloats(), ref, Tolerance(dtype));
    }
  }
}

TEST_CASE("gelu matches the tanh approximation", "[kernels][eltwise]") {
  CheckUnary("gelu", GeluRef, -6.0f, 6.0f);
}

TEST_CASE("gelu_backward matches the analytic derivative", "[kernels][eltwise]") {
  CheckActivationBackward("gelu_backward", GeluGradRef, -6.0f, 6.0f);
}

TEST_CASE("silu and silu_backward match the reference", "[kernels][eltwise]") {
  CheckUnary("silu", SiluRef, -12.0f, 12.0f);
  CheckActivationBackward("silu_backward", SiluGradRef, -12.0f, 12.0f);
}

TEST_CASE("activations propagate NaN and saturate at large inputs", "[kernels][eltwise]") {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    INFO(CpuIsaName(isa));
    const Tensor x = Tensor::FromFloats({NAN, 1e4f, -1e4f, 0.0f, 100.0f, -100.0f}, {6});
    const std::vector<float> gelu =
        RunKernel("gelu", DType::kF32, {x}, {Tensor::Zeros({6}, DType::kF32)})[0].ToFloats();
    REQUIRE(std::isnan(gelu[0]));
    REQUIRE(gelu[1] == 1e4f);
    REQUIRE(std::fabs(gelu[2]) < 1e-30f);
    REQUIRE(gelu[3] == 0.0f);
    const std::vector<float> silu =
        RunKernel("silu", DType::kF32, {x}, {Tensor::Zeros({6}, DType::kF32)})[0].ToFloats();
    REQUIRE(std::isnan(silu[0]));
    REQUIRE(silu[4] == 100.0f);
    REQUIRE(std::fabs(silu[5]) < 1e-30f);
  }
}

TEST_CASE("swiglu and swiglu_backward match the reference", "[kernels][eltwise]") {
  const int64_t rows = 37, f = 72;
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor gu = RandomTensor({rows, 2 * f}, dtype, 4, -5.0f, 5.0f);
      const Tensor dy = RandomTensor({rows, f}, dtype, 5);
      const Tensor out = RunKernel("swiglu", dtype, {gu}, {Tensor::Zeros({rows, f}, dtype)})[0];
      const Tensor dgu =
          RunKernel("swiglu_backward", dtype, {dy, gu}, {Tensor::Zeros({rows, 2 * f}, dtype)})[0];
      const std::vector<double> g = ToDoubles(gu), d = ToDoubles(dy);
      std::vector<float> ref_out(rows * f), ref_dgu(rows * 2 * f);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < f; ++i) {
          const double gate = g[r * 2 * f + i], up = g[r * 2 * f + f + i], dyv = d[r * f + i];
          ref_out[r * f + i] = static_cast<float>(SiluRef(gate) * up);
          ref_dgu[r * 2 * f + i] = static_cast<float>(dyv * up * SiluGradRef(gate));
          ref_dgu[r * 2 * f + f + i] = static_cast<float>(dyv * SiluRef(gate));
        }
      }
      KILN_REQUIRE_CLOSE(out.ToFloats(), ref_out, Tolerance(dtype));
      KILN_REQUIRE_CLOSE(dgu.ToFloats(), ref_dgu, Tolerance(dtype));
    }
  }
}

TEST_CASE("add broadcasts a suffix, mixes dtypes and runs in place", "[kernels][eltwise]") {
  const Shape a_shape{5, 37, 72};
  const Shape b_shapes[] = {{72}, {37, 72}, {5, 37, 72}, {}};
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      for (const Shape& b_shape : b_shapes) {
        for (DType b_dtype : {dtype, DType::kF32}) {
          INFO(CpuIsaName(isa) << " a " << dtype << " b " << b_dtype << ShapeToString(b_shape));
          const Tensor a = RandomTensor(a_shape, dtype, 6);
          const Tensor b = RandomTensor(b_shape, b_dtype, 7);
          const std::vector<double> av = ToDoubles(a), bv = ToDoubles(b);
          std::vector<float> ref(av.size());
          for (size_t i = 0; i < av.size(); ++i)
            ref[i] = static_cast<float>(av[i] + bv[i % bv.size()]);
          const Tensor out = RunKernel("add", dtype, {a, b}, {Tensor::Zeros(a_shape, dtype)})[0];
          KILN_REQUIRE_CLOSE(out.ToFloats(), ref, Tolerance(dtype));
          // In place: the output is a itself.
          const Tensor a2 = a.Clone();
          RunKernel("add", dtype, {a2, b}, {a2});
          REQUIRE(BitEqual(a2, out));
        }
      }
    }
  }
}

TEST_CASE("mul, scale and scale_by match the reference, in place too", "[kernels][eltwise]") {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor a = RandomTensor(kShape, dtype, 8);
      const Tensor b = RandomTensor(kShape, dtype, 9);
      const std::vector<double> av = ToDoubles(a), bv = ToDoubles(b);
      std::vector<float> prod(av.size()), scaled(av.size());
      for (size_t i = 0; i < av.size(); ++i) {
        prod[i] = static_cast<float>(av[i] * bv[i]);
        scaled[i] = static_cast<float>(av[i] * -1.75);
      }
      KILN_REQUIRE_CLOSE(
          RunKernel("mul", dtype, {a, b}, {Tensor::Zeros(kShape, dtype)})[0].ToFloats(), prod,
          Tolerance(dtype));
      const Tensor s = RunKernel("scale", dtype, {a}, {Tensor::Zeros(kShape, dtype)},
                                 ops::ScaleAttrs{-1.75f})[0];
      KILN_REQUIRE_CLOSE(s.ToFloats(), scaled, Tolerance(dtype));
      const Tensor factor = Tensor::FromFloats({-1.75f}, {1});
      const Tensor in_place = a.Clone();
      RunKernel("scale_by", dtype, {in_place, factor}, {in_place});
      REQUIRE(BitEqual(in_place, s));
      const Tensor in_place2 = a.Clone();
      RunKernel("scale", dtype, {in_place2}, {in_place2}, ops::ScaleAttrs{-1.75f});
      REQUIRE(BitEqual(in_place2, s));
    }
  }
}

TEST_CASE("cast converts every float pair with round-to-nearest-even", "[kernels][eltwise]") {
  // Ties, NaN, infinities, subnormals, overflow for f16, and plain values.
  std::vector<float> values = {1.0f + 1.0f / 256,
                               1.0f + 3.0f / 256,
                               -1.0f - 1.0f / 256,
                               NAN,
                               INFINITY,
                               -INFINITY,
                               1e-40f,
                               -3e-39f,
                               65520.0f,
                               70000.0f,
                               5.9604645e-8f,
                               1.0f + 1.0f / 2048,
                               0.0f,
                               -0.0f,
                               3.14159265f};
  const std::vector<float> random = RandomTensor({1001}, DType::kF32, 10, -100, 100).ToFloats();
  values.insert(values.end(), random.begin(), random.end());
  const Shape shape{static_cast<int64_t>(values.size())};
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType from : kFloatTypes) {
      for (DType to : kFloatTypes) {
        INFO(CpuIsaName(isa) << " " << from << " -> " << to);
        const Tensor x = Tensor::FromFloats(values, shape, from);
        const Tensor y =
            RunKernel("cast", from, {x}, {Tensor::Zeros(shape, to)}, ops::CastAttrs{to})[0];
        // The core runtime's scalar conversion is the definition of the rounding.
        const Tensor expected = x.To(to);
        const std::vector<float> got = y.ToFloats(), want = expected.ToFloats();
        int mismatches = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          if (std::isnan(want[i]) ? !std::isnan(got[i]) : std::memcmp(&got[i], &want[i], 4) != 0) {
            ++mismatches;
          }
        }
        REQUIRE(mismatches == 0);
      }
    }
  }
}

TEST_CASE("accumulate_grad adds any float dtype into the f32 slot", "[kernels][eltwise]") {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor g = RandomTensor(kShape, dtype, 11);
      const Tensor slot = RandomTensor(kShape, DType::kF32, 12);
      const std::vector<double> gv = ToDoubles(g), sv = ToDoubles(slot);
      std::vector<float> ref(gv.size());
      for (size_t i = 0; i < gv.size(); ++i) ref[i] = static_cast<float>(gv[i] + sv[i]);
      RunKernel("accumulate_grad", dtype, {g}, {slot});
      KILN_REQUIRE_CLOSE(slot.ToFloats(), ref, kTolF32);
    }
  }
}

TEST_CASE("broadcast_scalar fills with s * alpha", "[kernels][eltwise]") {
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor s = Tensor::FromFloats({0.5f}, {1});
      const Tensor out =
          RunKernel("broadcast_scalar", DType::kF32, {s}, {Tensor::Zeros({37, 3}, dtype)},
                    ops::BroadcastScalarAttrs{{37, 3}, dtype, -0.25f})[0];
      REQUIRE(out.ToFloats() == std::vector<float>(37 * 3, -0.125f));
    }
  }
}

// The documented counter layout (Note [Dropout stream] in register_eltwise.cc).
bool ReferenceKeep(uint64_t seed, uint64_t step, uint32_t stream, int64_t i, float p) {
  uint32_t words[4];
  Philox::Generate(seed, (step << 32) | stream, words);
  const uint64_t key = words[0] | (static_cast<uint64_t>(words[1]) << 32);
  Philox::Generate(key, static_cast<uint64_t>(i / 4), words);
  return Philox::ToUniform(words[i % 4]) >= p;
}

TEST_CASE("dropout masks reproducibly from (seed, step, stream)", "[kernels][eltwise]") {
  const Shape shape{10007};
  const float p = 0.3f;
  const ops::DropoutAttrs attrs{p, 7};
  const Tensor rng = Tensor::FromVector<int64_t>({1234, 5}, {2});
  const Tensor ones = Tensor::Full(shape, 1.0f, DType::kF32);
  std::vector<float> first;
  for (CpuIsa isa : TestIsas()) {
    IsaScope scope(isa);
    for (DType dtype : kFloatTypes) {
      INFO(CpuIsaName(isa) << " " << dtype);
      const Tensor x = RandomTensor(shape, dtype, 13, 0.5f, 1.5f);
      const Tensor y =
          RunKernel("dropout", dtype, {x, rng}, {Tensor::Zeros(shape, dtype)}, attrs)[0];
      const std::vector<float> xv = x.ToFloats(), yv = y.ToFloats();
      int64_t dropped = 0, wrong = 0;
      for (int64_t i = 0; i < shape[0]; ++i) {
        const bool keep = ReferenceKeep(1234, 5, 7, i, p);
        dropped += keep ? 0 : 1;
        const float want =
            keep ? static_cast<float>(Tensor::FromFloats({xv[i] / (1 - p)}, {1}, dtype).Item())
                 : 0.0f;
        if (std::fabs(yv[i] - want) > 1e-2f * std::fabs(want)) ++wrong;
      }
      REQUIRE(wrong == 0);
      REQUIRE(std::fabs(static_cast<double>(dropped) / shape[0] - p) < 0.02);
    }
    // Another step draws another mask; the same call is reproducible.
    const Tensor y1 = RunKernel("dropout", DType::kF32, {ones, rng},
                                {Tensor::Zeros(shape, DType::kF32)}, attrs)[0];
    const Tensor y2 = RunKernel("dropout", DType::kF32, {ones, rng},
                                {Tensor::Zeros(shape, DType::kF32)}, attrs)[0];
    const Tensor y3 =
        RunKernel("dropout", DType::kF32, {ones, Tensor::FromVector<int64_t>({1234, 6}, {2})},
                  {Tensor::Zeros(shape, DType::kF32)}, attrs)[0];
    REQUIRE(BitEqual(y1, y2));
    REQUIRE_FALSE(BitEqual(y1, y3));
    if (first.empty()) first = y1.ToFloats();
    REQUIRE(y1.ToFloats() == first);  // identical on every ISA
  }
}

}  // namespace
}  // namespace kiln::testing
