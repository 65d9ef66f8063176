// Element-wise kernel bodies (compiled once per ISA): scale/cast, GELU, SiLU, add (with suffix
// broadcast and mixed dtypes for accumulate_grad), mul, the activation backwards, SwiGLU, fill and
// dropout. Every loop converts on load and store and computes in f32.
#include "engine/core/parallel.h"
#include "engine/core/rng.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec.h"
#include "kernels/cpu/vec/vec_math.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

// Elements per parallel chunk: below this, threading costs more than it saves.
constexpr int64_t kGrain = int64_t{1} << 15;

// y[i] = op(x[i]) over n elements, in parallel. y may alias x (each vector is read before the same
// vector is written).
template <typename Tx, typename Ty, typename Op>
void MapUnary(const Tx* x, Ty* y, int64_t n, Op op) {
  ParallelForInline(n, kGrain, [&](int64_t begin, int64_t end) {
    ForEachVector(begin, end, [&](int64_t i, int w) { StoreN(op(LoadN(x + i, w)), y + i, w); });
  });
}

// out[i] = op(a[i], b[i]).
template <typename Ta, typename Tb, typename Op>
void MapBinary(const Ta* a, const Tb* b, Ta* out, int64_t n, Op op) {
  ParallelForInline(n, kGrain, [&](int64_t begin, int64_t end) {
    ForEachVector(begin, end, [&](int64_t i, int w) {
      StoreN(op(LoadN(a + i, w), LoadN(b + i, w)), out + i, w);
    });
  });
}

template <typename Tx>
void UnaryTyped(const UnaryArgs& args, const Tx* x) {
  const Vec alpha = Vec::Broadcast(args.alpha);
  if (args.op == UnaryOp::kScale) {
    DispatchFloating(args.y_dtype, [&](auto ty) {
      using Ty = decltype(ty);
      MapUnary(x, static_cast<Ty*>(args.y), args.n, [&](Vec v) { return alpha * v; });
    });
    return;
  }
  KILN_CHECK(args.x_dtype == args.y_dtype) << "activation with mixed dtypes";
  Tx* y = static_cast<Tx*>(args.y);
  if (args.op == UnaryOp::kGelu) {
    MapUnary(x, y, args.n, [](Vec v) { return Gelu(v); });
  } else {
    MapUnary(x, y, args.n, [](Vec v) { return Silu(v); });
  }
}

}  // namespace

void Unary(const UnaryArgs& args) {
  DispatchFloating(args.x_dtype, [&](auto tx) {
    using Tx = decltype(tx);
    UnaryTyped(args, static_cast<const Tx*>(args.x));
  });
}

namespace {

// a + b with b of length b_n repeating along a (bias add, accumulate_grad).
template <typename Ta, typename Tb>
void AddBroadcast(const Ta* a, const Tb* b, Ta* out, int64_t n, int64_t b_n) {
  const auto add = [](Vec x, Vec y) { return x + y; };
  if (b_n == n) {
    MapBinary(a, b, out, n, add);
    return;
  }
  if (b_n == 1) {
    const float scalar = ReduceAdd(LoadN(b, 1));  // b[0] as f32 (the other lanes are zero)
    MapUnary(a, out, n, [&](Vec x) { return x + Vec::Broadcast(scalar); });
    return;
  }
  const int64_t rows = n / b_n;
  const int64_t grain = kGrain / b_n > 0 ? kGrain / b_n : 1;
  ParallelForInline(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Ta* ar = a + r * b_n;  // (b_n)
      Ta* outr = out + r * b_n;    // (b_n)
      ForEachVector(0, b_n, [&](int64_t i, int w) {
        StoreN(LoadN(ar + i, w) + LoadN(b + i, w), outr + i, w);
      });
    }
  });
}

}  // namespace

void Binary(const BinaryArgs& args) {
  KILN_CHECK(args.b_n > 0 && args.n % args.b_n == 0) << "b must tile a";
  DispatchFloating(args.a_dtype, [&](auto ta) {
    using Ta = decltype(ta);
    const Ta* a = static_cast<const Ta*>(args.a);
    Ta* out = static_cast<Ta*>(args.out);
    if (args.op == BinaryOp::kAdd) {
      DispatchFloating(args.b_dtype, [&](auto tb) {
        using Tb = decltype(tb);
        AddBroadcast(a, static_cast<const Tb*>(args.b), out, args.n, args.b_n);
      });
      return;
    }
    KILN_CHECK(args.a_dtype == args.b_dtype && args.b_n == args.n)
        << "element-wise op needs equal shapes and dtypes";
    const Ta* b = static_cast<const Ta*>(args.b);
    switch (args.op) {
      case BinaryOp::kMul:
        MapBinary(a, b, out, args.n, [](Vec x, Vec y) { return x * y; });
        break;
      case BinaryOp::kGeluBackward:
        MapBinary(a, b, out, args.n, [](Vec dy, Vec x) { return GeluBackward(dy, x); });
        break;
      case BinaryOp::kSiluBackward:
        MapBinary(a, b, out, args.n, [](Vec dy, Vec x) { return SiluBackward(dy, x); });
        break;
      case BinaryOp::kAdd:
        break;
    }
  });
}

namespace {

template <typename T>
void SwigluTyped(const SwigluArgs& args) {
  const T* gu = static_cast<const T*>(args.gu);  // (rows, 2f)
  T* out = static_cast<T*>(args.out);            // (rows, f)
  const int64_t f = args.f;
  ParallelForInline(args.rows, kGrain / f > 0 ? kGrain / f : 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = gu + r * 2 * f;
      const T* up = gate + f;
      T* o = out + r * f;
      ForEachVector(0, f, [&](int64_t i, int w) {
        StoreN(Silu(LoadN(gate + i, w)) * LoadN(up + i, w), o + i, w);
      });
    }
  });
}

}  // namespace

void Swiglu(const SwigluArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { SwigluTyped<decltype(t)>(args); });
}

namespace {

template <typename T>
void SwigluBackwardTyped(const SwigluArgs& args) {
  const T* dy = static_cast<const T*>(args.dy);  // (rows, f)
  const T* gu = static_cast<const T*>(args.gu);  // (rows, 2f)
  T* dgu = static_cast<T*>(args.out);            // (rows, 2f)
  const int64_t f = args.f;
  const Vec one = Vec::Broadcast(1.0f);
  ParallelForInline(args.rows, kGrain / f > 0 ? kGrain / f : 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = gu + r * 2 * f;
      const T* up = gate + f;
      const T* dyr = dy + r * f;
      T* dgate = dgu + r * 2 * f;
      T* dup = dgate + f;
      ForEachVector(0, f, [&](int64_t i, int w) {
        const Vec g = LoadN(gate + i, w);
        const Vec u = LoadN(up + i, w);
        const Vec d = LoadN(dyr + i, w);
        const Vec s = Sigmoid(g);
        StoreN(d * g * s, dup + i, w);
        StoreN(d * u * s * Fma(g, one - s, one), dgate + i, w);
      });
    }
  });
}

}  // namespace

void SwigluBackward(const SwigluArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { SwigluBackwardTyped<decltype(t)>(args); });
}

void Fill(const FillArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) {
    using T = decltype(t);
    T* out = static_cast<T*>(args.out);
    const Vec v = Vec::Broadcast(args.value);
    ParallelForInline(args.n, kGrain, [&](int64_t begin, int64_t end) {
      ForEachVector(begin, end, [&](int64_t i, int w) { StoreN(v, out + i, w); });
    });
  });
}

namespace {

// Note [Dropout stream]: element i keeps its value when the uniform float from word i % 4 of
// Philox(key, counter = i / 4) is >= p. The key is derived from (seed, step, stream) once per call
// (register_misc.cc), so the counter is just the element's group index.
template <typename T>
void DropoutTyped(const DropoutArgs& args) {
  const T* x = static_cast<const T*>(args.x);
  T* y = static_cast<T*>(args.y);
  const float p = args.p;
  const Vec scale = Vec::Broadcast(p < 1.0f ? 1.0f / (1.0f - p) : 0.0f);
  const Vec threshold = Vec::Broadcast(p);
  // Chunks start on multiples of kChunk so every Philox call covers four elements of one chunk.
  constexpr int64_t kChunk = 64;
  static_assert(kChunk % Vec::kWidth == 0 && kChunk % 4 == 0, "dropout chunk");
  const int64_t chunks = (args.n + kChunk - 1) / kChunk;
  ParallelForInline(chunks, kGrain / kChunk, [&](int64_t begin, int64_t end) {
    alignas(64) float uniform[kChunk];
    for (int64_t c = begin; c < end; ++c) {
      const int64_t base = c * kChunk;
      const int64_t len = args.n - base < kChunk ? args.n - base : kChunk;
      for (int64_t g = 0; g < len; g += 4) {
        uint32_t words[4];
        Philox::Generate(args.key, static_cast<uint64_t>((base + g) / 4), words);
        for (int k = 0; k < 4; ++k) uniform[g + k] = Philox::ToUniform(words[k]);
      }
      ForEachVector(0, len, [&](int64_t i, int w) {
        const Vec u = LoadN(uniform + i, w);
        const Vec v = LoadN(x + base + i, w) * scale;
        StoreN(Select(Less(u, threshold), Vec::Zero(), v), y + base + i, w);
      });
    }
  });
}

}  // namespace

void Dropout(const DropoutArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { DropoutTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
