// Host tests of the CUDA backend's launch geometry and the device AdamW's chunk table (no GPU
// needed): flat (head, tile) grids stay within CUDA's limits where a (tiles, heads) grid would
// not, cuBLASLt alignment hints hold for every batch, the AdamW chunks cover exactly the elements
// optim's AdamW updates (Note [AdamW chunks], Note [Device AdamW state layout]), and the
// tensor-core attention's tiles, shared-memory layouts and loop bounds (Note [Tensor-core
// attention tiles]).
#include "kernels/cuda/launch_geometry.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/cuda/adam_table.h"
#include "kernels/cuda/attention_tc_layout.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

using kernels::cuda::AdamChunk;
using kernels::cuda::AdamTable;
using kernels::cuda::DeviceSegment;
using kernels::cuda::FlatTileGrid;
using kernels::cuda::MakeAdamTable;
using kernels::cuda::MakeFlatTileGrid;
using kernels::cuda::OperandAlignment;

TEST_CASE("flat tile grids cover every (head, tile) once", "[cuda][host]") {
  const FlatTileGrid g = MakeFlatTileGrid(129, 64, 6);
  REQUIRE(g.tiles == 3);
  REQUIRE(g.blocks == 18u);
  // The kernels decode block b as head b / tiles, tile b % tiles: a bijection onto the pairs.
  std::vector<int> seen(18, 0);
  for (unsigned b = 0; b < g.blocks; ++b) ++seen[(b / g.tiles) * g.tiles + b % g.tiles];
  REQUIRE(seen == std::vector<int>(18, 1));
  REQUIRE(MakeFlatTileGrid(0, 64, 6).blocks == 0u);
  REQUIRE(MakeFlatTileGrid(64, 64, 0).blocks == 0u);
  REQUIRE(MakeFlatTileGrid(64, 64, 1).tiles == 1);
}

TEST_CASE("attention grids of many heads fit where gridDim.y would not", "[cuda][host]") {
  // 4096 sequences of 32 heads at T = 128: 131072 heads, more than gridDim.y's 65535.
  const int64_t heads = int64_t{4096} * 32;
  REQUIRE(heads > kernels::cuda::kMaxGridYZ);
  const FlatTileGrid g = MakeFlatTileGrid(128, 64, heads);
  REQUIRE(g.tiles == 2);
  REQUIRE(static_cast<int64_t>(g.blocks) == heads * 2);
  REQUIRE(static_cast<int64_t>(g.blocks) <= kernels::cuda::kMaxGridX);
}

TEST_CASE("cuBLASLt alignment hints hold for every batch of an operand", "[cuda][host]") {
  REQUIRE(OperandAlignment(0x10000, {}) == 256);
  REQUIRE(OperandAlignment(0x10040, {}) == 64);
  REQUIRE(OperandAlignment(0x10000, {0}) == 256);  // a shared operand
  // (3, 40, 17) f32 batches 2720 bytes apart: the second batch is only 32-byte aligned.
  REQUIRE(OperandAlignment(0x10000, {40 * 17 * 4}) == 32);
  REQUIRE(OperandAlignment(0x10000, {17 * 2}) == 2);
  REQUIRE(OperandAlignment(0x10001, {1024}) == 1);
}

// How often the table's chunks touch each element of [0, span) (checking each chunk's bounds).
std::vector<int> Coverage(const AdamTable& table, int64_t span, int64_t chunk_elements) {
  std::vector<int> hits(static_cast<size_t>(span), 0);
  for (const AdamChunk& c : table.chunks) {
    REQUIRE(c.length >= 1);
    REQUIRE(c.length <= chunk_elements);
    REQUIRE(c.offset >= 0);
    REQUIRE(c.offset + c.length <= span);
    for (int64_t i = c.offset; i < c.offset + c.length; ++i) ++hits[static_cast<size_t>(i)];
  }
  return hits;
}

TEST_CASE("the AdamW chunks cover every element with a gradient exactly once", "[cuda][host]") {
  // Parameters with alignment padding between them; one has no gradient, one is empty; lengths
  // below, at and above multiples of the chunk size.
  const std::vector<DeviceSegment> segments = {
      {0, 10, true, true}, {16, 5, false, false}, {32, 7, false, true}, {40, 4, true, true},
      {48, 0, true, true}, {48, 1, false, true},  {64, 13, true, true}};
  const int64_t span = 80;
  for (int64_t chunk : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{7}, int64_t{64},
                        kernels::cuda::kAdamChunkElements}) {
    INFO("chunk_elements " << chunk);
    absl::StatusOr<AdamTable> table = MakeAdamTable(segments, span, chunk);
    INFO(table.status());
    REQUIRE(table.ok());
    const std::vector<int> hits = Coverage(*table, span, chunk);
    std::vector<int> expected(span, 0);
    int64_t updated = 0;
    for (const DeviceSegment& s : segments) {
      if (!s.has_grad) continue;
      for (int64_t i = s.offset; i < s.offset + s.length; ++i) expected[i] = 1;
      updated += s.length;
    }
    REQUIRE(hits == expected);  // padding and the gradient-less segment untouched
    REQUIRE(table->num_elements == updated);
    // Each chunk lies in one segment and carries that segment's decay flag; chunks follow the
    // segments' order, and only a segment's last chunk is short.
    size_t next = 0;
    for (const DeviceSegment& s : segments) {
      if (!s.has_grad) continue;
      for (int64_t start = 0; start < s.length; start += chunk) {
        REQUIRE(next < table->chunks.size());
        const kernels::cuda::AdamChunk& c = table->chunks[next++];
        REQUIRE(c.offset == s.offset + start);
        REQUIRE(c.length == std::min(chunk, s.length - start));
        REQUIRE(c.weight_decay == (s.weight_decay ? 1 : 0));
      }
    }
    REQUIRE(next == table->chunks.size());
  }
}

TEST_CASE("the AdamW table has no empty blocks and no limit on segments", "[cuda][host]") {
  // GPT-2 124M's shape in miniature: one large segment beside many small ones. The old 2-D grid
  // launched (largest / threads, capped) x segments blocks; the chunks are just enough.
  std::vector<DeviceSegment> segments;
  int64_t offset = 0;
  segments.push_back({offset, 100000, true, true});
  offset += 100032;
  for (int i = 0; i < 70000; ++i) {  // more than gridDim.y's 65535
    segments.push_back({offset, 3, i % 2 == 0, true});
    offset += 16;
  }
  absl::StatusOr<AdamTable> table = MakeAdamTable(segments, offset, 4096);
  INFO(table.status());
  REQUIRE(table.ok());
  REQUIRE(table->chunks.size() == (100000 + 4095) / 4096 + 70000);
  REQUIRE(table->num_elements == 100000 + 70000 * 3);
  REQUIRE(static_cast<int64_t>(table->chunks.size()) > kernels::cuda::kMaxGridYZ);
}

TEST_CASE("the AdamW table refuses segments outside the span and bad chunk sizes", "[cuda][host]") {
  REQUIRE(MakeAdamTable({{40, 10, true, true}}, 48).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(MakeAdamTable({{-1, 2, true, true}}, 48).status().code() ==
          absl::StatusCode::kInvalidArgument);
  // Checked even for a segment without a gradient: the layout is wrong either way.
  REQUIRE(MakeAdamTable({{40, 10, true, false}}, 48).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(MakeAdamTable({{0, 8, true, true}}, 8, 0).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(MakeAdamTable({{0, 8, true, true}}, 8, int64_t{1} << 31).status().code() ==
          absl::StatusCode::kInvalidArgument);
  const absl::StatusOr<AdamTable> empty = MakeAdamTable({}, 0);
  REQUIRE(empty.ok());
  REQUIRE(empty->chunks.empty());
}

namespace tc = kernels::cuda::attention_tc;

// Region (offset, bytes) lists of the three layouts at head dim d.
std::vector<std::pair<size_t, size_t>> Regions(int d, int which) {
  const size_t t16 = size_t(tc::kTile) * tc::Ld16(d) * 2, t32 = size_t(tc::kTile) * tc::Ld32(d) * 4;
  const size_t s16 = size_t(tc::kTile) * tc::Ld16(tc::kTile) * 2;
  const size_t s32 = size_t(tc::kTile) * tc::Ld32(tc::kTile) * 4;
  const size_t row = size_t(tc::kTile) * 4;
  if (which == 0) {
    const tc::ForwardLayout l = tc::MakeForwardLayout(d);
    return {{l.q, t16}, {l.k, t16}, {l.v, t16}, {l.s, s32},
            {l.p, s16}, {l.o, t32}, {l.m, row}, {l.l, row}};
  }
  if (which == 1) {
    const tc::DqLayout l = tc::MakeDqLayout(d);
    return {{l.q, t16},  {l.dout, t16}, {l.k, t16},   {l.v, t16},    {l.s, s32},
            {l.dp, s32}, {l.ds, s16},   {l.lse, row}, {l.delta, row}};
  }
  const tc::DkdvLayout l = tc::MakeDkdvLayout(d);
  return {{l.k, t16},   {l.v, t16},  {l.q, t16},   {l.dout, t16}, {l.st, s32},
          {l.dpt, s32}, {l.pt, s16}, {l.dst, s16}, {l.lse, row},  {l.delta, row}};
}

size_t Total(int d, int which) {
  return which == 0   ? tc::MakeForwardLayout(d).total
         : which == 1 ? tc::MakeDqLayout(d).total
                      : tc::MakeDkdvLayout(d).total;
}

TEST_CASE("tensor-core attention layouts are aligned, disjoint and within sm_80's limit",
          "[cuda][host]") {
  STATIC_REQUIRE(tc::kWarps * tc::kWarpRows == tc::kTile);
  STATIC_REQUIRE(tc::kThreads == 128);
  for (int d : {64, 128}) {
    // wmma: ldm a multiple of 16 bytes; every fragment (rows and columns at multiples of 16)
    // starts 32-byte aligned within its region.
    for (int cols : {d, tc::kTile}) {
      REQUIRE(tc::Ld16(cols) * 2 % 16 == 0);
      REQUIRE(tc::Ld32(cols) * 4 % 16 == 0);
      REQUIRE(size_t(tc::kFrag) * tc::Ld16(cols) * 2 % 32 == 0);
      REQUIRE(size_t(tc::kFrag) * tc::Ld32(cols) * 4 % 32 == 0);
      REQUIRE(tc::kFrag * 2 % 32 == 0);
    }
    REQUIRE(d * 2 % 16 == 0);  // CopyTile moves whole 16-byte chunks per row
    for (int which = 0; which < 3; ++which) {
      INFO("head_dim " << d << " kernel " << (which == 0 ? "forward" : which == 1 ? "dq" : "dkdv"));
      auto regions = Regions(d, which);
      std::sort(regions.begin(), regions.end());
      for (size_t i = 0; i < regions.size(); ++i) {
        CAPTURE(i, regions[i].first, regions[i].second);
        REQUIRE(regions[i].first % tc::kRegionAlign == 0);
        const size_t end = regions[i].first + regions[i].second;
        REQUIRE(end <= (i + 1 < regions.size() ? regions[i + 1].first : Total(d, which)));
      }
      REQUIRE(Total(d, which) <= tc::kSm80MaxSharedBytes);
      REQUIRE(Total(d, which) <= tc::MaxSharedBytes(d));
    }
    // The dq / dkdv stage (64, D) f32 fits in the score scratch it reuses after the loop.
    const tc::DqLayout dq = tc::MakeDqLayout(d);
    REQUIRE(dq.stage == dq.s);
    REQUIRE(dq.ds - dq.stage >= size_t(tc::kTile) * tc::Ld32(d) * 4);
    const tc::DkdvLayout kv = tc::MakeDkdvLayout(d);
    REQUIRE(kv.stage == kv.st);
    REQUIRE(kv.pt - kv.stage >= size_t(tc::kTile) * tc::Ld32(d) * 4);
  }
  // Recorded so that a change shows up in review: bytes per block.
  REQUIRE(tc::MakeForwardLayout(64).total == 72192);
  REQUIRE(tc::MakeForwardLayout(128).total == 113152);
}

TEST_CASE("the tensor-core attention takes 16-bit, head_dim 64 / 128, aligned launches only",
          "[cuda][host]") {
  using kernels::cuda::AttentionLaunch;
  using kernels::cuda::FloatType;
  alignas(16) static char buffer[64];
  AttentionLaunch a;
  a.type = FloatType::kBF16;
  a.n_head = 8;
  a.n_kv_head = 2;
  a.head_dim = 64;
  a.qkv = buffer;
  a.out = buffer + 16;
  REQUIRE(tc::LaunchFits(a));
  a.head_dim = 128;
  REQUIRE(tc::LaunchFits(a));
  a.type = FloatType::kF16;
  REQUIRE(tc::LaunchFits(a));
  a.dqkv = buffer + 8;  // misaligned
  REQUIRE_FALSE(tc::LaunchFits(a));
  a.dqkv = buffer + 32;
  REQUIRE(tc::LaunchFits(a));
  a.type = FloatType::kF32;
  REQUIRE_FALSE(tc::LaunchFits(a));
  a.type = FloatType::kBF16;
  for (int d : {16, 32, 80, 96, 256}) {
    a.head_dim = d;
    REQUIRE_FALSE(tc::LaunchFits(a));
  }
  a.head_dim = 64;
  a.n_kv_head = 3;
  REQUIRE_FALSE(tc::LaunchFits(a));
}

// Note [Masking only the edge tiles]: a tile the kernels leave unmasked has no invisible pair, and
// every tile with one is masked; at T 1024 causal, only the 16 diagonal tiles of a head's 136.
TEST_CASE("attention tiles left unmasked hold only visible pairs", "[cuda][host]") {
  for (bool causal : {true, false}) {
    for (int64_t seq : {1, 63, 64, 65, 130, 1024}) {
      INFO("seq " << seq << (causal ? " causal" : " full"));
      int64_t unmasked = 0, visited = 0;
      for (int64_t q0 = 0; q0 < seq; q0 += tc::kTile) {
        for (int64_t k0 = 0; k0 < tc::KeyEnd(q0, seq, causal); k0 += tc::kTile) {
          ++visited;
          bool all_visible = true;
          for (int64_t i = q0; i < q0 + tc::kTile; ++i) {
            for (int64_t j = k0; j < k0 + tc::kTile; ++j) {
              all_visible = all_visible && tc::Visible(i, j, seq, causal);
            }
          }
          CAPTURE(q0, k0);
          REQUIRE(tc::TileVisible(q0, k0, seq, causal) == all_visible);
          unmasked += all_visible ? 1 : 0;
        }
      }
      if (seq == 1024) REQUIRE(visited - unmasked == (causal ? 16 : 0));
    }
  }
}

TEST_CASE("tensor-core attention tiles visit every visible (query, key) pair exactly once",
          "[cuda][host]") {
  for (bool causal : {true, false}) {
    for (int64_t seq : {1, 15, 16, 17, 63, 64, 65, 77, 128, 200}) {
      INFO("seq " << seq << (causal ? " causal" : " full"));
      const int64_t tiles = (seq + tc::kTile - 1) / tc::kTile;
      std::vector<int> fwd(seq * seq, 0), dkdv(seq * seq, 0);
      // Forward and dq: a block per query tile streams key tiles while k0 < KeyEnd.
      for (int64_t q = 0; q < tiles; ++q) {
        const int64_t q0 = q * tc::kTile;
        for (int64_t k0 = 0; k0 < tc::KeyEnd(q0, seq, causal); k0 += tc::kTile) {
          for (int64_t i = q0; i < q0 + tc::kTile; ++i) {
            for (int64_t j = k0; j < k0 + tc::kTile; ++j) {
              if (tc::Visible(i, j, seq, causal)) ++fwd[i * seq + j];
            }
          }
        }
      }
      // dk/dv: a block per key tile streams query tiles from FirstQuery.
      for (int64_t k = 0; k < tiles; ++k) {
        const int64_t j0 = k * tc::kTile;
        for (int64_t i0 = tc::FirstQuery(j0, causal); i0 < seq; i0 += tc::kTile) {
          for (int64_t i = i0; i < i0 + tc::kTile; ++i) {
            for (int64_t j = j0; j < j0 + tc::kTile; ++j) {
              if (tc::Visible(i, j, seq, causal)) ++dkdv[i * seq + j];
            }
          }
        }
      }
      for (int64_t i = 0; i < seq; ++i) {
        for (int64_t j = 0; j < seq; ++j) {
          const int want = !causal || j <= i ? 1 : 0;
          CAPTURE(i, j);
          REQUIRE(fwd[i * seq + j] == want);
          REQUIRE(dkdv[i * seq + j] == want);
        }
      }
    }
  }
  // GPT-2 124M at T = 1024: 16 query tiles per head, gridDim.x = B * 12 * 16.
  const FlatTileGrid g = MakeFlatTileGrid(1024, tc::kTile, int64_t{64} * 12);
  REQUIRE(g.tiles == 16);
  REQUIRE(g.blocks == 64u * 12 * 16);
}

}  // namespace
}  // namespace kiln::testing
