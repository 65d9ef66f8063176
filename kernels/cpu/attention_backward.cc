// Fused multi-head attention backward (compiled once per ISA): recomputes the probabilities tile
// by tile from q, k and the saved log-sum-exp, and produces dq, dk, dv in the packed dqkv layout
// with grouped-query heads. No (T x T) buffer: one (block_q x T) tile pair per thread.
#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec_math.h"
#include "kernels/cpu/work_queue.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

// Note [Attention backward parallelism]
// dk and dv of a kv head collect contributions from every query block of every query head in its
// group. Splitting those across threads would need atomics (non-deterministic) or per-thread
// copies of dk/dv reduced afterwards, so a work item is one (batch, kv head), handed out
// dynamically (work_queue.h): it owns that head's dk/dv accumulators (f32, T x D) and walks its
// query heads and query blocks in a fixed order; dq of each query block is complete when the
// block is done and is written straight out. This is PyTorch's CPU flash-attention backward
// scheme (parallel over batch x heads); B * Hkv items keep a few cores busy at training batch
// sizes, and fewer items than cores leave cores idle (README.md, "Known limits").
//
// Per query block, with P = exp(scale q k^T - lse) and delta_i = sum_d dout_i out_i:
//   dP = dout v^T,  dS = scale P (dP - delta),  dq = dS k,  dk += dS^T q,  dv += P^T dout.
template <typename T>
void AttentionBackwardTyped(const AttentionArgs& args) {
  const int64_t batch = args.batch, seq = args.seq;
  const int64_t n_head = args.n_head, n_kv = args.n_kv_head, d = args.head_dim;
  const int64_t group = n_head / n_kv;
  const int64_t stride = (n_head + 2 * n_kv) * d;    // qkv row length
  const int64_t out_stride = n_head * d;             // out / dout row length
  const T* qkv = static_cast<const T*>(args.qkv);    // (B, T, (H + 2 Hkv) D)
  const T* out = static_cast<const T*>(args.out);    // (B, T, H D)
  const T* dout = static_cast<const T*>(args.dout);  // (B, T, H D)
  const float* lse = args.lse;                       // (B, H, T)
  T* dqkv = static_cast<T*>(args.dqkv);              // (B, T, (H + 2 Hkv) D)
  const AttentionLayout lay = MakeAttentionLayout(seq, d, /*backward=*/true);
  const int64_t tp = lay.tp, dp = lay.dp;
  const int64_t q_blocks = (seq + kAttentionBlockQ - 1) / kAttentionBlockQ;
  const Vec scale = Vec::Broadcast(args.scale);

  RunWorkers(batch * n_kv, [&](int tid, WorkQueue& queue) {
    KILN_CHECK(static_cast<size_t>(tid + 1) * lay.BytesPerThread() <= args.workspace_bytes)
        << "attention workspace too small for thread " << tid;
    float* ws = static_cast<float*>(args.workspace) + tid * lay.floats_per_thread;
    float* kt = ws + lay.kt;        // (D, tp)
    float* kr = ws + lay.k;         // (T, dp)
    float* vt = ws + lay.vt;        // (D, tp)
    float* dk = ws + lay.dk;        // (T, dp)
    float* dv = ws + lay.dv;        // (T, dp)
    float* q = ws + lay.q;          // (Bq, dp)
    float* dO = ws + lay.dout;      // (Bq, dp)
    float* p = ws + lay.s;          // (Bq, tp): scores, then probabilities
    float* ds = ws + lay.ds;        // (Bq, tp): dP, then dS
    float* dq = ws + lay.dq;        // (Bq, dp)
    float* delta = ws + lay.stats;  // (Bq)
    for (int64_t item; queue.Next(&item);) {
      const int64_t b = item / n_kv, g = item % n_kv;
      const T* rows = qkv + b * seq * stride;  // (T, stride) of this batch element
      T* drows = dqkv + b * seq * stride;
      PackTransposed(kt, tp, rows + (n_head + g) * d, stride, seq, d);
      PackRows(kr, dp, rows + (n_head + g) * d, stride, seq, d, 1.0f);
      PackTransposed(vt, tp, rows + (n_head + n_kv + g) * d, stride, seq, d);
      ZeroRange(dk, 0, seq * dp);
      ZeroRange(dv, 0, seq * dp);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (int64_t qb = 0; qb < q_blocks; ++qb) {
          const int64_t q0 = qb * kAttentionBlockQ;
          const int64_t m = seq - q0 < kAttentionBlockQ ? seq - q0 : kAttentionBlockQ;
          const int64_t keys = args.causal ? q0 + m : seq;
          const int64_t keys_padded = PadTo(keys, kAttentionPad);
          const T* out_rows = out + (b * seq + q0) * out_stride + h * d;  // (m, D), stride H D
          PackRows(q, dp, rows + q0 * stride + h * d, stride, m, d, 1.0f);
          PackRows(dO, dp, dout + (b * seq + q0) * out_stride + h * d, out_stride, m, d, 1.0f);
          for (int64_t i = 0; i < m; ++i) {
            const float* dorow = dO + i * dp;
            const T* orow = out_rows + i * out_stride;
            delta[i] = ReduceSum(
                0, d, [&](int64_t j, int w) { return LoadN(dorow + j, w) * LoadN(orow + j, w); });
          }
          TileGemm(m, keys_padded, d, q, dp, 1, kt, tp, p, tp, /*accumulate=*/false);
          TileGemm(m, keys_padded, d, dO, dp, 1, vt, tp, ds, tp, /*accumulate=*/false);
          for (int64_t i = 0; i < m; ++i) {
            const int64_t t = q0 + i;
            const int64_t visible = args.causal ? t + 1 : seq;
            float* prow = p + i * tp;
            float* dsrow = ds + i * tp;
            const Vec neg_lse = Vec::Broadcast(-lse[(b * n_head + h) * seq + t]);
            const Vec di = Vec::Broadcast(delta[i]);
            ForEachVector(0, visible, [&](int64_t j, int w) {
              const Vec pj = Exp(Fma(LoadN(prow + j, w), scale, neg_lse));
              StoreN(pj, prow + j, w);
              StoreN(scale * pj * (LoadN(dsrow + j, w) - di), dsrow + j, w);
            });
            ZeroRange(prow, visible, keys);
            ZeroRange(dsrow, visible, keys);
          }
          TileGemm(m, dp, keys, ds, tp, 1, kr, dp, dq, dp, /*accumulate=*/false);
          UnpackRows(drows + q0 * stride + h * d, stride, dq, dp, m, d);
          TileGemm(keys, dp, m, ds, 1, tp, q, dp, dk, dp, /*accumulate=*/true);
          TileGemm(keys, dp, m, p, 1, tp, dO, dp, dv, dp, /*accumulate=*/true);
        }
      }
      UnpackRows(drows + (n_head + g) * d, stride, dk, dp, seq, d);
      UnpackRows(drows + (n_head + n_kv + g) * d, stride, dv, dp, seq, d);
    }
  });
}

}  // namespace

void AttentionBackward(const AttentionArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { AttentionBackwardTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
