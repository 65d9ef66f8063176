// Host tests of the CUDA backend's launch geometry and the device AdamW's segment table (no GPU
// needed): flat (head, tile) grids stay within CUDA's limits where a (tiles, heads) grid would
// not, cuBLASLt alignment hints hold for every batch, and the AdamW table indexes moments as
// optim's AdamW does (Note [Device AdamW state layout]).
#include "kernels/cuda/adam_table.h"
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

}  // namespace
}  // namespace kiln::testing
