// Rotary position embedding body (compiled once per ISA) on the packed qkv layout, Hugging Face
// rotate-half convention: for each q and k head, (x1, x2) = halves of the head, out = (x1 cos - x2
// sin, x2 cos + x1 sin) at the token's position, v copied. Inverse rotates by -angle.
#include <cstring>

#include "engine/core/parallel.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

template <typename T>
void RopeTyped(const RopeArgs& args) {
  const int64_t d = args.head_dim, half = d / 2;
  const int64_t rotated_heads = args.n_head + args.n_kv_head;
  const int64_t stride = (args.n_head + 2 * args.n_kv_head) * d;  // qkv row length
  const T* x = static_cast<const T*>(args.x);                     // (B, T, stride)
  T* y = static_cast<T*>(args.y);                                 // (B, T, stride)
  const bool in_place = args.x == args.y;
  const Vec sign = Vec::Broadcast(args.inverse ? -1.0f : 1.0f);
  const int64_t grain = 4096 / stride > 0 ? 4096 / stride : 1;
  ParallelForInline(args.batch * args.seq, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = row % args.seq;
      const float* cos = args.cos + t * half;  // (D/2)
      const float* sin = args.sin + t * half;  // (D/2)
      const T* xr = x + row * stride;
      T* yr = y + row * stride;
      for (int64_t h = 0; h < rotated_heads; ++h) {
        const T* x1 = xr + h * d;
        const T* x2 = x1 + half;
        T* y1 = yr + h * d;
        T* y2 = y1 + half;
        // Both halves are loaded before either is stored, so y may alias x.
        ForEachVector(0, half, [&](int64_t i, int w) {
          const Vec a = LoadN(x1 + i, w), b = LoadN(x2 + i, w);
          const Vec c = LoadN(cos + i, w), s = LoadN(sin + i, w) * sign;
          StoreN(a * c - b * s, y1 + i, w);
          StoreN(b * c + a * s, y2 + i, w);
        });
      }
      if (!in_place) {
        std::memcpy(yr + rotated_heads * d, xr + rotated_heads * d,
                    static_cast<size_t>(args.n_kv_head * d) * sizeof(T));
      }
    }
  });
}

}  // namespace

void Rope(const RopeArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { RopeTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
