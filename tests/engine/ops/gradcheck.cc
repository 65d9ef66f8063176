// Finite-difference gradient checker (see gradcheck.h).
#include "tests/engine/ops/gradcheck.h"

#include <cmath>
#include <random>
#include <sstream>

#include "engine/graph/autodiff.h"
#include "engine/graph/builder.h"
#include "engine/graph/executor.h"
#include "engine/graph/op_schema.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "tests/testing.h"

namespace kiln::testing {

using graph::ValueId;

Tensor RandomTensor(const Shape& shape, uint64_t seed, float scale, DType dtype) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(NumElements(shape)));
  for (float& x : v) x = dist(rng);
  return Tensor::FromFloats(v, shape, dtype);
}

Tensor RandomIds(const Shape& shape, int high, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, high - 1);
  std::vector<int32_t> v(static_cast<size_t>(NumElements(shape)));
  for (int32_t& x : v) x = dist(rng);
  return Tensor::FromVector(v, shape);
}

GradCheckResult RunGradCheck(const GradCheckCase& c) {
  const graph::OpSchema* schema = graph::OpRegistry::Global().Find(c.op);
  KILN_CHECK(schema != nullptr) << c.op;
  graph::Graph g;
  graph::GraphBuilder b(&g);
  std::vector<bool> check = c.check;
  check.resize(c.inputs.size(), false);
  if (c.check.empty()) {
    for (size_t i = 0; i < c.inputs.size(); ++i) check[i] = c.inputs[i].dtype() == DType::kF32;
  }
  std::vector<ValueId> ins;
  std::vector<int> param_of_input(c.inputs.size(), -1);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const graph::TensorType t{c.inputs[i].sizes(), c.inputs[i].dtype()};
    if (check[i]) {
      param_of_input[i] = static_cast<int>(g.params().size());
      ins.push_back(b.Param(schema->input_names[i], t));
    } else {
      ins.push_back(b.Constant(schema->input_names[i], c.inputs[i]));
    }
  }
  const std::vector<ValueId> outs = b.Apply(c.op, ins, c.attrs);
  KILN_CHECK_OK(b.status());
  // scalar = sum_k sum(out_k * W_k) with fixed random W_k
  ValueId scalar = graph::kNoValue;
  for (size_t k = 0; k < outs.size(); ++k) {
    const graph::TensorType& t = g.value(outs[k]).type;
    const bool use = c.outputs.empty() ? IsFloating(t.dtype) : c.outputs[k];
    if (!use) continue;
    const ValueId w = b.Constant("weights", RandomTensor(t.shape, c.seed + 100 + k, 1.0f, t.dtype));
    const ValueId term = ops::Sum(b, ops::Mul(b, outs[k], w));
    scalar = scalar == graph::kNoValue ? term : ops::Add(b, scalar, term);
  }
  KILN_CHECK_OK(b.status());
  g.MarkOutput(scalar);
  auto info = graph::BuildBackward(b, scalar);
  KILN_CHECK_OK(info.status());
  auto exec_or = graph::Executor::Create(std::move(g));
  KILN_CHECK_OK(exec_or.status());
  graph::Executor& exec = **exec_or;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (param_of_input[i] < 0) continue;
    Tensor p = exec.param(param_of_input[i]);
    p.CopyFrom(c.inputs[i]);
  }
  Tensor seed = exec.value(info->loss_seed);
  seed.Fill(1.0f);
  exec.ZeroGrads();
  exec.Run();
  auto forward = [&]() {
    exec.RunNodes(0, info->num_forward_nodes);
    return static_cast<double>(exec.value(scalar).Item());
  };

  GradCheckResult result;
  std::ostringstream report;
  std::mt19937_64 pick(c.seed);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (param_of_input[i] < 0) continue;
    const ValueId grad_value = exec.graph().grads()[param_of_input[i]];
    KILN_CHECK(grad_value != graph::kNoValue) << "no gradient for input " << i << " of " << c.op;
    const std::vector<float> analytic_all = exec.value(grad_value).ToFloats();
    Tensor p = exec.param(param_of_input[i]);
    float* data = p.data<float>();
    const int64_t n = p.numel();
    std::vector<int64_t> idx;
    if (n <= c.samples) {
      for (int64_t j = 0; j < n; ++j) idx.push_back(j);
    } else {
      std::uniform_int_distribution<int64_t> d(0, n - 1);
      for (int s = 0; s < c.samples; ++s) idx.push_back(d(pick));
    }
    std::vector<float> analytic, numeric;
    for (int64_t j : idx) {
      const float orig = data[j];
      data[j] = orig + c.eps;
      const double up = forward();
      data[j] = orig - c.eps;
      const double down = forward();
      data[j] = orig;
      numeric.push_back(static_cast<float>((up - down) / (2.0 * c.eps)));
      analytic.push_back(analytic_all[j]);
    }
    const double err = RelativeL2(analytic, numeric);
    result.relative_error.push_back(err);
    report << c.op << " input " << schema->input_names[i] << ": relative L2 " << err << " over "
           << idx.size() << " elements (tolerance " << c.tolerance << ")\n";
  }
  result.report = report.str();
  return result;
}

}  // namespace kiln::testing
