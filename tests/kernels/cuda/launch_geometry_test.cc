// Host tests of the CUDA backend's launch geometry and the device AdamW's segment table (no GPU
// needed): flat (head, tile) grids stay within CUDA's limits where a (tiles, heads) grid would
// not, cuBLASLt alignment hints hold for every batch, and the AdamW table indexes moments as
// optim's AdamW does (Note [Device AdamW state layout]), and the tensor-core attention's tiles,
// shared-memory layouts and loop bounds (Note [Tensor-core attention tiles]).
#include <algorithm>
#include <utility>

#include "kernels/cuda/adam_table.h"
#include "kernels/cuda/attention_tc_layout.h"
#include "kernels/cuda/launch_geometry.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

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

TEST_CASE("the AdamW table indexes the moments by the segments' own offsets", "[cuda][host]") {
  // Three parameters with alignment padding between them; the middle one has no gradient.
  const std::vector<DeviceSegment> segments = {
      {0, 10, true, true}, {16, 5, false, false}, {32, 7, false, true}};
  absl::StatusOr<AdamTable> table = MakeAdamTable(segments, 48);
  INFO(table.status());
  REQUIRE(table.ok());
  REQUIRE(table->segments.size() == 2);
  REQUIRE(table->segments[0].offset == 0);
  REQUIRE(table->segments[0].length == 10);
  REQUIRE(table->segments[0].weight_decay == 1);
  // Not 10 (the count of elements before it): moments have the shard's span, as on the CPU.
  REQUIRE(table->segments[1].offset == 32);
  REQUIRE(table->segments[1].length == 7);
  REQUIRE(table->segments[1].weight_decay == 0);
  REQUIRE(table->max_length == 10);
}

TEST_CASE("the AdamW table refuses segments outside the span and too many segments",
          "[cuda][host]") {
  REQUIRE(MakeAdamTable({{40, 10, true, true}}, 48).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(MakeAdamTable({{-1, 2, true, true}}, 48).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(MakeAdamTable({}, 0).ok());
  std::vector<DeviceSegment> many(kernels::cuda::kMaxGridYZ + 1, {0, 1, true, true});
  for (size_t i = 0; i < many.size(); ++i) many[i].offset = static_cast<int64_t>(i);
  const auto refused = MakeAdamTable(many, static_cast<int64_t>(many.size()));
  REQUIRE(refused.status().code() == absl::StatusCode::kUnimplemented);
  many.pop_back();
  REQUIRE(MakeAdamTable(many, static_cast<int64_t>(many.size())).ok());
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
    return {{l.q, t16}, {l.k, t16}, {l.v, t16}, {l.s, s32}, {l.p, s16}, {l.o, t32},
            {l.m, row}, {l.l, row}};
  }
  if (which == 1) {
    const tc::DqLayout l = tc::MakeDqLayout(d);
    return {{l.q, t16},  {l.dout, t16}, {l.k, t16},  {l.v, t16},
            {l.s, s32},  {l.dp, s32},   {l.ds, s16}, {l.lse, row},
            {l.delta, row}};
  }
  const tc::DkdvLayout l = tc::MakeDkdvLayout(d);
  return {{l.k, t16},  {l.v, t16},   {l.q, t16},   {l.dout, t16},   {l.st, s32},
          {l.dpt, s32}, {l.pt, s16}, {l.dst, s16}, {l.lse, row}, {l.delta, row}};
}

size_t Total(int d, int which) {
  return which == 0 ? tc::MakeForwardLayout(d).total
                    : which == 1 ? tc::MakeDqLayout(d).total : tc::MakeDkdvLayout(d).total;
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
