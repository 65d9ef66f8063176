// Turns a token file into (inputs, targets) batches with the exact order the job spec promises:
// sequential (batch i reads from position i*B*T, wrapping to 0 when the next batch would run past
// the end) or a seeded shuffle of T-token windows per epoch. The loader reads the rows of one
// global batch; a data-parallel rank takes a contiguous block of them. Its position is part of a
// checkpoint, so a resumed run reads exactly what an uninterrupted one would.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "engine/data/token_file.h"

namespace kiln::data {

struct LoaderState {
  int64_t position = 0;  // sequential: token offset of the next batch
  int64_t epoch = 0;     // shuffled: epoch and next window index within it
  int64_t window = 0;
};

class BatchLoader {
 public:
  // `global_rows` rows of `seq_len` tokens per batch; this reader takes rows
  // [row_begin, row_begin + rows).
  BatchLoader(std::shared_ptr<const TokenFile> file, int seq_len, int global_rows, int row_begin,
              int rows, bool shuffle, uint64_t seed);

  // Whether `file` holds at least one global batch of `global_rows` x `seq_len` (sequential needs
  // rows*T + 1 tokens, shuffled needs `global_rows` windows); the error names the file and sizes.
  static absl::Status CheckFits(const TokenFile& file, int seq_len, int global_rows, bool shuffle);

  // Fills inputs and targets, each (rows, seq_len) int32, and advances to the next global batch.
  void Next(int32_t* inputs, int32_t* targets);

  const LoaderState& state() const { return state_; }
  void set_state(const LoaderState& state) { state_ = state; }
  int64_t windows_per_epoch() const { return num_windows_; }

 private:
  int64_t WindowStart(int64_t epoch, int64_t index) const;
  void ReadRow(int64_t start, int32_t* inputs, int32_t* targets) const;

  std::shared_ptr<const TokenFile> file_;
  int seq_len_, global_rows_, row_begin_, rows_;
  bool shuffle_;
  uint64_t seed_;
  int64_t num_windows_;
  LoaderState state_;
};

}  // namespace kiln::data
