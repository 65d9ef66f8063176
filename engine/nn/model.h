// Model builders: a ModelConfig plus batch shape becomes a training graph (forward, loss and —
// when asked — backward) together with the parameter table that maps every graph parameter to its
// Hugging Face tensor names. GPT-2 (gpt2.cc), Llama (llama.cc) and a small MLP (mlp.cc).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/graph/autodiff.h"
#include "engine/graph/graph.h"
#include "engine/nn/param_table.h"

namespace kiln::nn {

struct ModelConfig {
  std::string family = "gpt2";  // gpt2 | llama | mlp
  int n_layer = 2;
  int n_head = 2;
  int n_kv_head = 2;
  int d_model = 64;
  int d_ff = 256;
  int vocab_size = 256;  // mlp: classes (1 = regression with mean squared error)
  int max_seq_len = 64;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_embeddings = true;
  int d_in = 16;  // mlp: input features
  float dropout = 0.0f;

  int head_dim() const { return d_model / n_head; }
};

struct GraphOptions {
  int batch = 1;                // B: rows per micro-batch
  int seq_len = 1;              // T (ignored by mlp)
  DType compute = DType::kF32;  // activations and matmuls; parameters stay f32
  bool backward = true;         // append the backward pass
  bool logits_output = false;   // keep the logits readable after a run (evaluation, sampling)
  // Fold bias adds and the GELU around linear layers into the matmuls, the residual gradient into
  // the norm backwards and the loss seed into the loss gradient (engine/graph/passes.h). Off only
  // to compare against the unfused graph.
  bool fuse_matmul_epilogues = true;
};

struct ModelGraph {
  graph::Graph graph;
  ParamTable params;
  graph::ValueId inputs = graph::kNoValue;   // tokens i32 (B, T); mlp: features f32 (B, d_in)
  graph::ValueId targets = graph::kNoValue;  // i32 (B, T); mlp: i32 (B) classes or f32 (B, 1)
  graph::ValueId rng = graph::kNoValue;      // i64 [2] (seed, step) when dropout > 0
  graph::ValueId loss = graph::kNoValue;     // f32 [1]
  graph::ValueId logits = graph::kNoValue;   // (B, T, V) in the compute dtype
  graph::BackwardInfo backward;
};

// Checks the configuration (every error names the field) and builds the graph.
absl::StatusOr<ModelGraph> BuildModel(const ModelConfig& config, const GraphOptions& options);

// Validation alone, for spec checking before any work.
absl::Status ValidateModelConfig(const ModelConfig& config);

}  // namespace kiln::nn
