// Bucket and shard layout of the flat parameter buffer.
#include "engine/dist/bucket_layout.h"

#include <cctype>

namespace kiln::dist {

namespace {
int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
}  // namespace

std::string LayerKey(const std::string& name) {
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    bool numeric = dot > start;
    for (size_t i = start; i < dot; ++i) numeric = numeric && std::isdigit(name[i]);
    if (numeric) return name.substr(0, dot);
    start = dot + 1;
  }
  return name;
}

BucketLayout MakeBucketLayout(const std::vector<ParamInfo>& params, int world,
                              int64_t bucket_elements, int64_t align, bool per_layer) {
  BucketLayout layout;
  layout.world = world;
  layout.param_offset.resize(params.size());
  layout.bucket_of.resize(params.size());
  const int64_t quantum = align * world;
  Bucket current;
  int64_t used = 0;  // aligned elements in the current bucket
  std::string current_key;
  auto close = [&]() {
    if (current.params.empty()) return;
    current.length = RoundUp(std::max<int64_t>(used, 1), quantum);
    current.chunk = current.length / world;
    layout.max_bucket = std::max(layout.max_bucket, current.length);
    layout.elements = current.offset + current.length;
    layout.buckets.push_back(current);
    current = Bucket();
    current.offset = layout.elements;
    used = 0;
  };
  for (size_t p = 0; p < params.size(); ++p) {
    const int64_t size = RoundUp(std::max<int64_t>(params[p].numel, 1), align);
    const std::string key = LayerKey(params[p].name);
    const bool new_layer = per_layer && !current.params.empty() && key != current_key;
    if (new_layer || (!current.params.empty() && used + size > bucket_elements)) close();
    current_key = key;
    layout.param_offset[p] = current.offset + used;
    layout.bucket_of[p] = static_cast<int>(layout.buckets.size());
    current.params.push_back(static_cast<int>(p));
    used += size;
  }
  close();
  return layout;
}

std::vector<std::pair<int64_t, int64_t>> BucketLayout::OwnedRanges(int rank) const {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const Bucket& b : buckets) {
    const int64_t begin = b.offset + rank * b.chunk;
    ranges.emplace_back(begin, begin + b.chunk);
  }
  return ranges;
}

int64_t BucketLayout::ShardElements() const {
  int64_t n = 0;
  for (const Bucket& b : buckets) n += b.chunk;
  return n;
}

}  // namespace kiln::dist
