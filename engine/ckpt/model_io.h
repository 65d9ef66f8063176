// Model weights in Hugging Face form: loading a safetensors file (or a folder with config.json and
// model.safetensors) into the flat parameter buffer through the parameter table, and writing the
// trained weights back under the same names. Any float dtype loads into any training precision.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/nn/model.h"
#include "engine/nn/param_table.h"

namespace kiln::ckpt {

// `init_from` is a .safetensors file or a folder holding model.safetensors (and config.json).
std::string WeightsPathFor(const std::string& init_from);

// Copies every table entry from the file into `graph_params` (f32, indexed like the graph's
// parameters). Errors name the tensor: missing, unexpected, or a shape that differs (both shapes).
absl::Status LoadModelWeights(const std::string& path, const nn::ParamTable& table,
                              const std::vector<Tensor>& graph_params);

// Writes every table entry under its Hugging Face name, in `dtype`.
absl::Status SaveModelWeights(const std::string& path, const nn::ParamTable& table,
                              const std::vector<Tensor>& graph_params, DType dtype = DType::kF32);

// Hugging Face config.json <-> ModelConfig (gpt2: n_layer, n_head, n_embd, n_inner, n_positions,
// layer_norm_epsilon, vocab_size; llama: num_hidden_layers, num_attention_heads,
// num_key_value_heads, hidden_size, intermediate_size, max_position_embeddings, rms_norm_eps,
// rope_theta, vocab_size, tie_word_embeddings).
absl::StatusOr<nn::ModelConfig> ReadHfConfig(const std::string& path);
absl::Status WriteHfConfig(const std::string& path, const nn::ModelConfig& config);

}  // namespace kiln::ckpt
