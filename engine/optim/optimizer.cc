// AdamW and SGD on flat segments; the inner loops are fused (one pass over p, g, m, v) and
// multi-threaded.
#include "engine/optim/optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/parallel.h"

namespace kiln::optim {
namespace {

int64_t TotalLength(const std::vector<Segment>& segments) {
  int64_t n = 0;
  for (const Segment& s : segments) n += s.length;
  return n;
}

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, std::vector<Segment> segments)
      : c_(c), segments_(std::move(segments)) {
    const int64_t n = TotalLength(segments_);
    m_ = Tensor::Zeros({n}, DType::kF32);
    v_ = Tensor::Zeros({n}, DType::kF32);
  }

  void Step(float* params, const float* grads, float lr, int64_t step) override {
    const double bc1 = 1.0 - std::pow(static_cast<double>(c_.beta1), static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(c_.beta2), static_cast<double>(step));
    const float step_size = static_cast<float>(lr / bc1);
    const float inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
    const float b1 = c_.beta1, b2 = c_.beta2, eps = c_.eps;
    int64_t state_offset = 0;
    for (const Segment& s : segments_) {
      float* m = m_.data<float>() + state_offset;
      float* v = v_.data<float>() + state_offset;
      state_offset += s.length;
      if (!s.has_grad) continue;
      float* p = params + s.offset;
      const float* g = grads + s.offset;
      const float decay = s.weight_decay ? 1.0f - lr * c_.weight_decay : 1.0f;
      ParallelForInline(s.length, 1 << 14, [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
          const float gi = g[i];
          const float mi = b1 * m[i] + (1.0f - b1) * gi;
          const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
          m[i] = mi;
          v[i] = vi;
          const float denom = std::sqrt(vi) * inv_bc2_sqrt + eps;
          p[i] = p[i] * decay - step_size * mi / denom;
        }
      });
    }
  }

  std::vector<std::pair<std::string, Tensor>> State() override {
    return {{"exp_avg", m_}, {"exp_avg_sq", v_}};
  }
  int64_t StateBytes() const override { return 2 * m_.numel() * 4; }

 private:
  OptimizerConfig c_;
  std::vector<Segment> segments_;
  Tensor m_, v_;  // (n) f32 each
};

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, std::vector<Segment> segments)
      : c_(c), segments_(std::move(segments)) {
    buf_ = Tensor::Zeros({TotalLength(segments_)}, DType::kF32);
  }

  // torch.optim.SGD: g += wd * p; buf = momentum * buf + g (buf = g at the first step); p -= lr * buf.
  void Step(float* params, const float* grads, float lr, int64_t step) override {
    int64_t state_offset = 0;
    for (const Segment& s : segments_) {
      float* buf = buf_.data<float>() + state_offset;
      state_offset += s.length;
      if (!s.has_grad) continue;
      float* p = params + s.offset;
      const float* g = grads + s.offset;
      const float wd = s.weight_decay ? c_.weight_decay : 0.0f, mu = c_.momentum;
      const bool first = step == 1;
      ParallelForInline(s.length, 1 << 14, [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
          const float gi = g[i] + wd * p[i];
          const float b = mu == 0.0f ? gi : (first ? gi : mu * buf[i] + gi);
          buf[i] = b;
          p[i] -= lr * b;
        }
      });
    }
  }

  std::vector<std::pair<std::string, Tensor>> State() override { return {{"momentum", buf_}}; }
  int64_t StateBytes() const override { return buf_.numel() * 4; }

 private:
  OptimizerConfig c_;
  std::vector<Segment> segments_;
  Tensor buf_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const OptimizerConfig& config,
                                                         std::vector<Segment> segments) {
  if (config.name == "adamw") return std::make_unique<AdamW>(config, std::move(segments));
  if (config.name == "sgd") return std::make_unique<Sgd>(config, std::move(segments));
  return absl::InvalidArgumentError(absl::StrCat("train.optimizer.name: \"", config.name,
                                                 "\" is not one of adamw, sgd"));
}

}  // namespace kiln::optim
