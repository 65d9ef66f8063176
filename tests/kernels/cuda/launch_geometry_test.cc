// Host tests of the CUDA backend's launch geometry and the device AdamW's chunk table (no GPU
// needed): flat (head, tile) grids stay within CUDA's limits where a (tiles, heads) grid would
// not, cuBLASLt alignment hints hold for every batch, and the AdamW chunks cover exactly the
// elements optim's AdamW updates (Note [AdamW chunks], Note [Device AdamW state layout]).
#include <algorithm>
#include <vector>

#include "kernels/cuda/adam_table.h"
#include "kernels/cuda/launch_geometry.h"
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

}  // namespace
}  // namespace kiln::testing
