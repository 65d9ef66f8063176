// TrainingSession::Generate: continue a token sequence with the current weights (greedy or top-k),
// running the forward graph over a sliding window of the last T tokens.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/rng.h"
#include "engine/train/session.h"

namespace kiln::train {

absl::StatusOr<std::vector<int32_t>> TrainingSession::Generate(const std::vector<int32_t>& prompt,
                                                               int new_tokens, int top_k,
                                                               float temperature, uint64_t seed) {
  if (config_.family == "mlp") {
    return absl::FailedPreconditionError("text generation needs a gpt2 or llama model");
  }
  if (prompt.empty()) return absl::InvalidArgumentError("generation needs a non-empty prompt");
  for (int32_t t : prompt) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", t, " is outside the vocabulary"));
    }
  }
  if (sample_exec_ == nullptr) {
    KILN_ASSIGN_OR_RETURN(sample_exec_, BuildForwardExecutor(1, seq_len_, true));
  }
  const int T = seq_len_, V = config_.vocab_size;
  std::vector<int32_t> tokens = prompt;
  std::vector<float> row(V);
  std::vector<int> order(V);
  for (int i = 0; i < new_tokens; ++i) {
    const int len = std::min<int>(T, static_cast<int>(tokens.size()));
    const Tensor& bound = sample_exec_->value(sample_inputs_);  // (1, T) i32, on the device
    const Tensor host = bound.device().is_cpu() ? bound : Tensor::Zeros(bound.sizes(), DType::kI32);
    int32_t* in = host.data<int32_t>();
    std::memset(in, 0, sizeof(int32_t) * T);
    std::copy(tokens.end() - len, tokens.end(), in);
    if (!bound.device().is_cpu()) bound.CopyFrom(host);
    sample_exec_->Run();
    const Tensor& logits = sample_exec_->value(sample_logits_);  // (1, T, V)
    row = logits.Slice(1, len - 1, len).ToFloats();
    int next = 0;
    if (top_k <= 1) {
      next = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
    } else {
      const int k = std::min(top_k, V);
      for (int v = 0; v < V; ++v) order[v] = v;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int a, int b) { return row[a] > row[b]; });
      const float t = temperature > 0 ? temperature : 1.0f;
      double total = 0;
      std::vector<double> p(k);
      for (int j = 0; j < k; ++j) total += p[j] = std::exp((row[order[j]] - row[order[0]]) / t);
      uint32_t w[4];
      Philox::Generate(seed, static_cast<uint64_t>(i), w);
      double u = Philox::ToUniform(w[0]) * total;
      next = order[k - 1];
      for (int j = 0; j < k; ++j) {
        if ((u -= p[j]) < 0) {
          next = order[j];
          break;
        }
      }
    }
    tokens.push_back(next);
  }
  return std::vector<int32_t>(tokens.begin() + prompt.size(), tokens.end());
}

}  // namespace kiln::train
