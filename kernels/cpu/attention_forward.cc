// Fused multi-head attention forward (compiled once per ISA): causal or full softmax(q k^T scale) v
// on the packed qkv layout with grouped-query heads, flash-attention style — only out and the
// per-query log-sum-exp are written; scores live in one (block_q x T) tile per thread.
#include <cmath>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/isa_impl.h"
#include "kernels/cpu/vec/vec_math.h"
#include "kernels/cpu/work_queue.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {
namespace {

// Note [Attention forward tiling]
// Work items are (batch, head, query block) in that order, handed out dynamically in increasing
// order (work_queue.h), so the items a thread draws mostly share a kv head (the heads of one GQA
// group are adjacent): a thread packs K^T and V of a kv head into f32 tiles and reuses them until
// it draws an item of another kv head. Per query block it computes the scores for all keys the
// block can see (S = q k^T, block_q x T), an exact two-pass softmax per row (max, then exp and
// sum — no online rescaling is needed because the whole row is there), O = P V, and divides by
// the row sum at the end. Keys past a query's position get P = 0.
template <typename T>
void AttentionForwardTyped(const AttentionArgs& args) {
  const int64_t batch = args.batch, seq = args.seq;
  const int64_t n_head = args.n_head, n_kv = args.n_kv_head, d = args.head_dim;
  const int64_t group = n_head / n_kv;
  const int64_t stride = (n_head + 2 * n_kv) * d;  // qkv row length
  const T* qkv = static_cast<const T*>(args.qkv);  // (B, T, (H + 2 Hkv) D)
  T* out = static_cast<T*>(args.out);              // (B, T, H D)
  float* lse = args.lse;                           // (B, H, T)
  const AttentionLayout lay = MakeAttentionLayout(seq, d, /*backward=*/false);
  const int64_t tp = lay.tp, dp = lay.dp;
  const int64_t q_blocks = (seq + kAttentionBlockQ - 1) / kAttentionBlockQ;

  RunWorkers(batch * n_head * q_blocks, [&](int tid, WorkQueue& queue) {
    KILN_CHECK(static_cast<size_t>(tid + 1) * lay.BytesPerThread() <= args.workspace_bytes)
        << "attention workspace too small for thread " << tid;
    float* ws = static_cast<float*>(args.workspace) + tid * lay.floats_per_thread;
    float* kt = ws + lay.kt;          // (D, tp)
    float* v = ws + lay.v;            // (T, dp)
    float* q = ws + lay.q;            // (Bq, dp), pre-scaled
    float* s = ws + lay.s;            // (Bq, tp): scores, then probabilities
    float* o = ws + lay.o;            // (Bq, dp)
    float* row_sum = ws + lay.stats;  // (Bq)
    int64_t packed_kv = -1;
    for (int64_t item; queue.Next(&item);) {
      const int64_t qb = item % q_blocks;
      const int64_t h = (item / q_blocks) % n_head;
      const int64_t b = item / (q_blocks * n_head);
      const int64_t g = h / group;
      const T* rows = qkv + b * seq * stride;  // (T, stride) of this batch element
      if (packed_kv != b * n_kv + g) {
        PackTransposed(kt, tp, rows + (n_head + g) * d, stride, seq, d);
        PackRows(v, dp, rows + (n_head + n_kv + g) * d, stride, seq, d, 1.0f);
        packed_kv = b * n_kv + g;
      }
      const int64_t q0 = qb * kAttentionBlockQ;
      const int64_t m = seq - q0 < kAttentionBlockQ ? seq - q0 : kAttentionBlockQ;
      const int64_t keys = args.causal ? q0 + m : seq;  // keys any row of the block sees
      PackRows(q, dp, rows + q0 * stride + h * d, stride, m, d, args.scale);
      TileGemm(m, PadTo(keys, kAttentionPad), d, q, dp, 1, kt, tp, s, tp, /*accumulate=*/false);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t t = q0 + i;
        const int64_t visible = args.causal ? t + 1 : seq;
        float* srow = s + i * tp;
        const float row_max =
            ReduceMaxOver(0, visible, [&](int64_t j, int w) { return LoadN(srow + j, w); });
        const Vec mx = Vec::Broadcast(row_max);
        const float sum = ReduceSum(0, visible, [&](int64_t j, int w) {
          const Vec e = Exp(LoadN(srow + j, w) - mx);
          StoreN(e, srow + j, w);
          return e;
        });
        ZeroRange(srow, visible, keys);
        row_sum[i] = sum;
        lse[(b * n_head + h) * seq + t] = row_max + std::log(sum);
      }
      TileGemm(m, dp, keys, s, tp, 1, v, dp, o, dp, /*accumulate=*/false);
      for (int64_t i = 0; i < m; ++i) {
        const Vec inv = Vec::Broadcast(1.0f / row_sum[i]);
        float* orow = o + i * dp;
        ForEachVector(0, d,
                      [&](int64_t j, int w) { StoreN(LoadN(orow + j, w) * inv, orow + j, w); });
      }
      UnpackRows(out + (b * seq + q0) * n_head * d + h * d, n_head * d, o, dp, m, d);
    }
  });
}

}  // namespace

void AttentionForward(const AttentionArgs& args) {
  DispatchFloating(args.dtype, [&](auto t) { AttentionForwardTyped<decltype(t)>(args); });
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
