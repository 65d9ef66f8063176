// Normalization kernel bodies (compiled once per ISA): layer norm and RMS norm over the last axis,
// forward and backward. Statistics, gamma and beta are f32; rows are independent in the forward,
// and the backward's dgamma/dbeta follow Note [Fixed blockings] (isa_api.h).
#include <cmath>

#include "engine/core/parallel.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

// Elements per parallel chunk of rows.
constexpr int64_t kGrainElements = int64_t{1} << 14;

int64_t RowGrain(int64_t cols) { return kGrainElements / cols > 0 ? kGrainElements / cols : 1; }

// Note [RMS norm rounding]: as Hugging Face LlamaRMSNorm, the normalized x * rstd is rounded to x's
// dtype before the gamma multiply (a no-op for f32); the backward uses the rounded value for
// dgamma and treats the rounding as identity for dx. The last pass over each row prefetches the
// next row (see Prefetch in vec.h).
template <typename T, bool kRms>
void NormForwardTyped(const NormArgs& args) {
  const T* x = static_cast<const T*>(args.x);  // (rows, cols)
  T* y = static_cast<T*>(args.y);              // (rows, cols)
  const float* gamma = args.gamma;             // (cols)
  const float* beta = args.beta;               // (cols)
  const int64_t cols = args.cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  ParallelForInline(args.rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      if constexpr (kRms) {
        const float sum_sq = ReduceSum(0, cols, [&](int64_t i, int w) {
          const Vec v = LoadN(xr + i, w);
          return v * v;
        });
        const float rstd = 1.0f / std::sqrt(sum_sq * inv_cols + args.eps);
        args.rstd[r] = rstd;
        const Vec rs = Vec::Broadcast(rstd);
        ForEachVector(0, cols, [&](int64_t i, int w) {
          Prefetch(xr + cols + i);
          const Vec normalized = RoundTo<T>(LoadN(xr + i, w) * rs);
          StoreN(normalized * LoadN(gamma + i, w), yr + i, w);
        });
      } else {
        const float mean =
            ReduceSum(0, cols, [&](int64_t i, int w) { return LoadN(xr + i, w); }) * inv_cols;
        const Vec m = Vec::Broadcast(mean);
        const float var = ReduceSum(0, cols,
                                    [&](int64_t i, int w) {
                                      const Vec d = LoadN(xr + i, w) - m;
                                      return d * d;
                                    }) *
                          inv_cols;
        const float rstd = 1.0f / std::sqrt(var + args.eps);
        args.mean[r] = mean;
        args.rstd[r] = rstd;
        const Vec rs = Vec::Broadcast(rstd);
        ForEachVector(0, cols, [&](int64_t i, int w) {
          Prefetch(xr + cols + i);
          const Vec xhat = (LoadN(xr + i, w) - m) * rs;
          StoreN(Fma(xhat, LoadN(gamma + i, w), LoadN(beta + i, w)), yr + i, w);
        });
      }
    }
  });
}

// The last pass over each row prefetches the next one (see Prefetch in vec.h).
//
// Per row, with xhat the normalized x and g = dy * gamma:
//   layer norm: dx = rstd (g - mean(g) - xhat mean(g xhat)),  dgamma += dy xhat, dbeta += dy
//   RMS norm:   dx = rstd (g - xhat mean(g xhat)),            dgamma += dy xhat
// Tail lanes load as zero, so dy = 0 there and every product with dy needs no masking.
template <typename T, bool kRms>
void NormBackwardTyped(const NormBackwardArgs& args) {
  const T* dy = static_cast<const T*>(args.dy);              // (rows, cols)
  const T* x = static_cast<const T*>(args.x);                // (rows, cols)
  T* dx = static_cast<T*>(args.dx);                          // (rows, cols)
  const T* residual = static_cast<const T*>(args.residual);  // optional (rows, cols)
  const float* gamma = args.gamma;                           // (cols)
  const int64_t rows = args.rows, cols = args.cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const RowBlocking blocking = FixedRowBlocks(rows);
  ParallelForInline(blocking.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* part_gamma = args.partials + b * 2 * cols;  // (cols)
      float* part_beta = part_gamma + cols;              // (cols)
      ForEachVector(0, 2 * cols, [&](int64_t i, int w) { StoreN(Vec::Zero(), part_gamma + i, w); });
      const int64_t r0 = b * blocking.rows_per_block;
      const int64_t r1 = r0 + blocking.rows_per_block < rows ? r0 + blocking.rows_per_block : rows;
      for (int64_t r = r0; r < r1; ++r) {
        const T* dyr = dy + r * cols;
        const T* xr = x + r * cols;
        T* dxr = dx + r * cols;
        const T* resr = residual != nullptr ? residual + r * cols : nullptr;
        const Vec rs = Vec::Broadcast(args.rstd[r]);
        const Vec m = Vec::Broadcast(kRms ? 0.0f : args.mean[r]);
        Vec sum_g = Vec::Zero(), sum_gx = Vec::Zero();
        ForEachVector(0, cols, [&](int64_t i, int w) {
          const Vec d = LoadN(dyr + i, w);
          const Vec xhat = (LoadN(xr + i, w) - m) * rs;
          const Vec g = d * LoadN(gamma + i, w);
          sum_gx = Fma(g, xhat, sum_gx);
          const Vec xhat_param = kRms ? RoundTo<T>(xhat) : xhat;
          StoreN(Fma(d, xhat_param, LoadN(part_gamma + i, w)), part_gamma + i, w);
          if constexpr (!kRms) {
            sum_g = sum_g + g;
            StoreN(LoadN(part_beta + i, w) + d, part_beta + i, w);
          }
        });
        const Vec mean_g = Vec::Broadcast(ReduceAdd(sum_g) * inv_cols);
        const Vec mean_gx = Vec::Broadcast(ReduceAdd(sum_gx) * inv_cols);
        ForEachVector(0, cols, [&](int64_t i, int w) {
          Prefetch(xr + cols + i);
          Prefetch(dyr + cols + i);
          const Vec xhat = (LoadN(xr + i, w) - m) * rs;
          const Vec g = LoadN(dyr + i, w) * LoadN(gamma + i, w);
          const Vec d = rs * (g - mean_g - xhat * mean_gx);
          // Note [Residual gradient in the norm backward]: dx rounded as stored, then the sum.
          StoreN(resr != nullptr ? RoundTo<T>(d) + LoadN(resr + i, w) : d, dxr + i, w);
        });
      }
    }
  });
  ParallelForInline(cols, RowGrain(blocking.count), [&](int64_t begin, int64_t end) {
    ForEachVector(begin, end, [&](int64_t i, int w) {
      Vec dg = Vec::Zero(), db = Vec::Zero();
      for (int64_t b = 0; b < blocking.count; ++b) {
        dg = dg + LoadN(args.partials + b * 2 * cols + i, w);
        if (!kRms) db = db + LoadN(args.partials + b * 2 * cols + cols + i, w);
      }
      StoreN(dg, args.dgamma + i, w);
      if (!kRms) StoreN(db, args.dbeta + i, w);
    });
  });
}

}  // namespace

void Norm(const NormArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) {
    using T = decltype(t);
    if (args.rms) {
      NormForwardTyped<T, true>(args);
    } else {
      NormForwardTyped<T, false>(args);
    }
  });
}

void NormBackward(const NormBackwardArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) {
    using T = decltype(t);
    if (args.rms) {
      NormBackwardTyped<T, true>(args);
    } else {
      NormBackwardTyped<T, false>(args);
    }
  });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
