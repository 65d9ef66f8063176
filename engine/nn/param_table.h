// The parameter table: every trainable tensor under its Hugging Face name, where it lives in the
// graph (a parameter, or a row range of a fused one such as Llama's q/k/v), its role, whether it
// gets weight decay and how a fresh model initializes it. Checkpoint IO and optimizers read this,
// never positions.
#pragma once

#include <string>
#include <vector>

#include "engine/core/shape.h"

namespace kiln::nn {

enum class ParamRole { kEmbedding, kPosition, kWeight, kBias, kNormGain, kNormBias };

struct ParamInit {
  enum Kind { kNormal, kZeros, kOnes } kind = kNormal;
  float std = 0.02f;
};

struct ParamEntry {
  std::string name;      // Hugging Face name, e.g. "h.0.attn.c_attn.weight"
  Shape shape;           // its shape in Hugging Face layout
  int graph_param = -1;  // index into Graph::params()
  int64_t offset = 0;    // element offset inside that graph parameter (fused parameters)
  ParamRole role = ParamRole::kWeight;
  bool weight_decay = true;  // two or more dimensions and not a norm gain or bias
  ParamInit init;
  int64_t numel() const { return NumElements(shape); }
};

struct ParamTable {
  std::vector<ParamEntry> entries;
  // Names a loader accepts and ignores (e.g. GPT-2's "h.{i}.attn.bias" causal mask buffer) as
  // suffixes, and prefixes stripped before matching (e.g. "transformer.").
  std::vector<std::string> ignored_suffixes;
  std::vector<std::string> accepted_prefixes;
  // Names that alias another entry when tied (e.g. "lm_head.weight" -> "wte.weight").
  std::vector<std::pair<std::string, std::string>> aliases;

  const ParamEntry* Find(const std::string& name) const;
  int64_t total_elements() const;
};

}  // namespace kiln::nn
