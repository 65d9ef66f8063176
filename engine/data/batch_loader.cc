// Batch order: sequential with wrap-around, or per-epoch seeded permutations of windows.
#include "engine/data/batch_loader.h"

#include "absl/strings/str_cat.h"
#include "engine/core/rng.h"
#include "engine/core/status.h"

namespace kiln::data {

BatchLoader::BatchLoader(std::shared_ptr<const TokenFile> file, int seq_len, int global_rows,
                         int row_begin, int rows, bool shuffle, uint64_t seed)
    : file_(std::move(file)), seq_len_(seq_len), global_rows_(global_rows), row_begin_(row_begin),
      rows_(rows), shuffle_(shuffle), seed_(seed) {
  KILN_CHECK(seq_len_ > 0 && rows_ > 0 && row_begin_ + rows_ <= global_rows_);
  // A window is T inputs plus the one-token-shifted targets: T + 1 tokens from a multiple of T.
  num_windows_ = (file_->size() - 1) / seq_len_;
  KILN_CHECK_GT(num_windows_, 0) << file_->path() << " is shorter than one sequence";
}

absl::Status BatchLoader::CheckFits(const TokenFile& file, int seq_len, int global_rows,
                                    bool shuffle) {
  // Sequential reads rows*T + 1 tokens; shuffled needs `global_rows` windows of T + 1 tokens
  // starting at multiples of T, which is the same count.
  (void)shuffle;
  const int64_t need = static_cast<int64_t>(global_rows) * seq_len + 1;
  if (file.size() < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path(), ": holds ", file.size(), " tokens, fewer than one batch of ", global_rows,
        " rows x ", seq_len, " tokens (+1 for the shifted targets) = ", need));
  }
  return absl::OkStatus();
}

void BatchLoader::ReadRow(int64_t start, int32_t* inputs, int32_t* targets) const {
  file_->Read(start, seq_len_, inputs);
  file_->Read(start + 1, seq_len_, targets);
}

// Note [Shuffled windows]
// Each epoch visits every window once in an order drawn from (seed, epoch): a Fisher-Yates
// shuffle would need O(windows) memory per epoch, so the permutation is instead a bijection on
// [0, windows) built from a keyed Feistel network with cycle-walking — constant memory, any index
// computable on its own, and identical after a resume.
int64_t BatchLoader::WindowStart(int64_t epoch, int64_t index) const {
  const uint64_t n = static_cast<uint64_t>(num_windows_);
  int bits = 1;
  while ((uint64_t{1} << bits) < n) ++bits;
  const int half = (bits + 1) / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = static_cast<uint64_t>(index);
  do {
    uint64_t left = x >> half, right = x & mask;
    for (int round = 0; round < 4; ++round) {
      uint32_t r[4];
      Philox::Generate(seed_ ^ (static_cast<uint64_t>(epoch) << 20), (right << 3) | round, r);
      const uint64_t f = r[0] & mask;
      const uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= n);
  return static_cast<int64_t>(x) * seq_len_;
}

void BatchLoader::Next(int32_t* inputs, int32_t* targets) {
  const int64_t batch_tokens = static_cast<int64_t>(global_rows_) * seq_len_;
  if (!shuffle_) {
    if (state_.position + batch_tokens + 1 > file_->size()) state_.position = 0;
    for (int r = 0; r < rows_; ++r) {
      const int64_t start = state_.position + static_cast<int64_t>(row_begin_ + r) * seq_len_;
      ReadRow(start, inputs + static_cast<int64_t>(r) * seq_len_,
              targets + static_cast<int64_t>(r) * seq_len_);
    }
    state_.position += batch_tokens;
    return;
  }
  // Shuffled: a batch never straddles epochs; the tail of an epoch that cannot fill one is skipped.
  if (state_.window + global_rows_ > num_windows_) {
    state_.window = 0;
    ++state_.epoch;
  }
  for (int r = 0; r < rows_; ++r) {
    const int64_t start = WindowStart(state_.epoch, state_.window + row_begin_ + r);
    ReadRow(start, inputs + static_cast<int64_t>(r) * seq_len_,
            targets + static_cast<int64_t>(r) * seq_len_);
  }
  state_.window += global_rows_;
}

}  // namespace kiln::data
