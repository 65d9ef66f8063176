// Attributes of the fused loss and the lookup ops.
//   cross_entropy(logits, targets) -> (loss, dlogits): logits (..., V) any float dtype, targets i32
//     with logits' leading shape; loss f32 [1] = mean over counted rows of (logsumexp - logit[t]);
//     dlogits like logits = (softmax - onehot(t)) / counted rows, the gradient of that mean, written
//     in the same pass (it may overwrite logits in place). Rows whose target is ignore_index count
//     for neither. A target outside [0, V) other than ignore_index is a contract violation.
//   embedding(table, ids) -> out: table (V, C), ids i32 (...); out (..., C) like table.
//   embedding_backward(dy, ids) -> dtable (V, C) f32: sum of dy rows per id, deterministic.
//   dropout(x, rng) -> y: rng i64 [2] = (seed, step); keeps each element with probability 1 - p and
//     scales kept ones by 1/(1-p); the mask is a pure function of (seed, step, stream, index), so
//     the gradient is the same op applied to dy.
#pragma once

#include <cstdint>

namespace kiln::ops {

struct CrossEntropyAttrs {
  int ignore_index = -100;
};

struct EmbeddingAttrs {
  int64_t vocab_size = 0;  // embedding_backward: rows of the gradient table
};

struct DropoutAttrs {
  float p = 0.0f;
  uint32_t stream = 0;  // distinct per dropout node
};

}  // namespace kiln::ops
