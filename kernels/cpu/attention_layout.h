// How one thread's attention scratch is carved up (shared by the registration, which sizes the
// workspace, and the per-ISA bodies, which use it). All tiles are f32; sequence and head
// dimensions are padded to kAttentionPad so tile products never need masked loads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::kernels::cpu {

// Query rows per tile; sequence (T) and head (D) dimensions are padded to kAttentionPad.
constexpr int64_t kAttentionBlockQ = 64;
constexpr int64_t kAttentionPad = 16;
inline int64_t PadTo(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Offsets (in floats) of each tile in one thread's scratch; unused tiles have size 0.
// Forward uses kt, v, q, s, o, stats; backward uses kt, k, vt, dk, dv, q, dout, s, ds, dq, stats.
struct AttentionLayout {
  int64_t tp = 0;                                         // T padded
  int64_t dp = 0;                                         // D padded
  int64_t kt = 0, k = 0, vt = 0, v = 0, dk = 0, dv = 0;   // per kv head: (D, tp) or (T, dp)
  int64_t q = 0, dout = 0, s = 0, ds = 0, o = 0, dq = 0;  // per query tile: (Bq, dp) or (Bq, tp)
  int64_t stats = 0;                                      // (2 Bq): row max / sum, or delta
  int64_t floats_per_thread = 0;

  size_t BytesPerThread() const { return static_cast<size_t>(floats_per_thread) * sizeof(float); }
};

inline AttentionLayout MakeAttentionLayout(int64_t seq, int64_t head_dim, bool backward) {
  AttentionLayout l;
  l.tp = PadTo(seq, kAttentionPad);
  l.dp = PadTo(head_dim, kAttentionPad);
  int64_t next = 0;
  const auto take = [&next](int64_t floats) {
    const int64_t at = next;
    next += PadTo(floats, kAttentionPad);  // keep every tile 64-byte aligned
    return at;
  };
  const int64_t kv_transposed = head_dim * l.tp, kv_rows = seq * l.dp;
  const int64_t q_rows = kAttentionBlockQ * l.dp, q_scores = kAttentionBlockQ * l.tp;
  l.kt = take(kv_transposed);
  if (backward) {
    l.k = take(kv_rows);
    l.vt = take(kv_transposed);
    l.dk = take(kv_rows);
    l.dv = take(kv_rows);
    l.dout = take(q_rows);
    l.ds = take(q_scores);
    l.dq = take(q_rows);
  } else {
    l.v = take(kv_rows);
    l.o = take(q_rows);
  }
  l.q = take(q_rows);
  l.s = take(q_scores);
  l.stats = take(2 * kAttentionBlockQ);
  l.floats_per_thread = next;
  return l;
}

}  // namespace kiln::kernels::cpu
