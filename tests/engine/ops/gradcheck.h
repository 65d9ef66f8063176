// Finite-difference gradient checking for any registered op: the op's outputs are reduced to a
// scalar with fixed random weights, autodiff builds the backward graph, and each selected input's
// analytic gradient is compared with central differences of that scalar.
#pragma once

#include <any>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace kiln::testing {

struct GradCheckCase {
  std::string op;
  std::any attrs;
  std::vector<Tensor> inputs;  // f32 for the inputs to check; others as the op needs
  std::vector<bool> check;     // per input: differentiate it (default: every f32 input)
  std::vector<bool> outputs;   // per output: include it in the scalar (default: every float one)
  float eps = 1e-2f;           // central-difference step
  double tolerance = 2e-3;     // relative L2 between analytic and numeric gradients
  int samples = 48;            // elements perturbed per input (all when fewer)
  uint64_t seed = 7;
};

struct GradCheckResult {
  std::vector<double> relative_error;  // per checked input
  std::string report;                  // human-readable, for INFO()
};

GradCheckResult RunGradCheck(const GradCheckCase& c);

// Random N(0, scale^2) tensor, deterministic in `seed`.
Tensor RandomTensor(const Shape& shape, uint64_t seed, float scale = 1.0f,
                    DType dtype = DType::kF32);
// Random integer ids in [0, high).
Tensor RandomIds(const Shape& shape, int high, uint64_t seed);

}  // namespace kiln::testing
