// The flat parameter layout of a data-parallel model: parameters grouped into buckets (contiguous
// ranges of the flat buffers, in parameter order), each padded to a multiple of the world size so
// that it splits into equal per-rank chunks. Gradients are reduced bucket by bucket as backward
// finishes them; with ZeRO, rank r owns chunk r of every bucket. See Note [Buckets and shards].
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::dist {

// Note [Buckets and shards]
// A bucket is a run of whole parameters, at most `bucket_elements` long unless one parameter is
// larger, padded so that world * chunk elements cover it; its chunks are the units of
// reduce-scatter and all-gather, so every collective works on one contiguous range of the flat
// buffers. A ZeRO shard is therefore not one range of the flat buffer but one chunk per bucket
// (OwnedRanges); optimizers handle lists of ranges. Backward finishes parameters roughly in reverse
// order, so the last bucket is the first to be reduced. For ZeRO-3 every "layer" (parameters whose
// names share a prefix up to the first number, like h.3. or model.layers.3.; or one parameter
// otherwise) starts a new bucket, so a gather brings in one layer's weights.

struct ParamInfo {
  std::string name;
  int64_t numel = 0;
};

struct Bucket {
  int64_t offset = 0;   // flat element offset
  int64_t length = 0;   // padded: world * chunk
  int64_t chunk = 0;    // elements per rank
  std::vector<int> params;  // parameter indices, in flat order
};

struct BucketLayout {
  int world = 1;
  std::vector<Bucket> buckets;
  std::vector<int64_t> param_offset;  // per parameter: flat element offset
  std::vector<int> bucket_of;         // per parameter
  int64_t elements = 0;               // flat buffer length
  int64_t max_bucket = 0;             // the longest bucket (staging buffer size)

  // Rank r's chunk of every bucket, as flat [begin, end) ranges in flat order.
  std::vector<std::pair<int64_t, int64_t>> OwnedRanges(int rank) const;
  // Elements rank r owns (the same on every rank).
  int64_t ShardElements() const;
};

// `align` (elements) aligns every parameter and chunk; `per_layer` starts a bucket at every layer.
BucketLayout MakeBucketLayout(const std::vector<ParamInfo>& params, int world,
                              int64_t bucket_elements, int64_t align, bool per_layer);

// The "layer" a parameter name belongs to (Note [Buckets and shards]).
std::string LayerKey(const std::string& name);

}  // namespace kiln::dist
