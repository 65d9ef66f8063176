// AdamW and SGD on flat segments. Each update is one fused pass over (master, grad, state, and the
// low-precision copy), typed on the gradient and parameter dtypes, multi-threaded.
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

// Calls fn(G{}, P{}) with G the gradient type and P the low-precision parameter type (float when
// there is no low-precision copy).
template <typename Fn>
void DispatchStep(const StepArgs& a, Fn&& fn) {
  DispatchFloating(a.grad_dtype, [&](auto g) {
    if (a.params == nullptr) {
      fn(g, float{});
    } else {
      DispatchFloating(a.param_dtype, [&](auto p) { fn(g, p); });
    }
  });
}

// Runs body(begin, end, state_offset, segment) over every segment with a gradient, in parallel.
template <typename Body>
void ForEachSegment(const std::vector<Segment>& segments, Body&& body) {
  int64_t state_offset = 0;
  for (const Segment& s : segments) {
    const int64_t base = state_offset;
    state_offset += s.length;
    if (!s.has_grad) continue;
    ParallelForInline(s.length, 1 << 14,
                      [&](int64_t begin, int64_t end) { body(begin, end, base, s); });
  }
}

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, std::vector<Segment> segments)
      : c_(c), segments_(std::move(segments)) {
    const int64_t n = TotalLength(segments_);
    m_ = Tensor::Zeros({n}, DType::kF32);
    v_ = Tensor::Zeros({n}, DType::kF32);
  }

  void Step(const StepArgs& a) override {
    DispatchStep(a, [&](auto g_tag, auto p_tag) { Update<decltype(g_tag), decltype(p_tag)>(a); });
  }

  std::vector<std::pair<std::string, Tensor>> State() override {
    return {{"exp_avg", m_}, {"exp_avg_sq", v_}};
  }
  int64_t StateBytes() const override { return 2 * m_.numel() * 4; }

 private:
  // As torch.optim.AdamW: p *= 1 - lr*wd; m, v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
  template <typename G, typename P>
  void Update(const StepArgs& a) {
    const double bc1 = 1.0 - std::pow(static_cast<double>(c_.beta1), static_cast<double>(a.step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(c_.beta2), static_cast<double>(a.step));
    const float step_size = static_cast<float>(a.lr / bc1);
    const float inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
    const float b1 = c_.beta1, b2 = c_.beta2, eps = c_.eps, scale = a.grad_scale;
    float* m_all = m_.data<float>();
    float* v_all = v_.data<float>();
    ForEachSegment(segments_, [&](int64_t begin, int64_t end, int64_t base, const Segment& s) {
      float* p = a.master + s.offset;
      const G* g = static_cast<const G*>(a.grads) + s.offset;
      P* out = a.params ? static_cast<P*>(a.params) + s.offset : nullptr;
      float* m = m_all + base;
      float* v = v_all + base;
      const float decay = s.weight_decay ? 1.0f - a.lr * c_.weight_decay : 1.0f;
      for (int64_t i = begin; i < end; ++i) {
        const float gi = static_cast<float>(g[i]) * scale;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float pi = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_bc2_sqrt + eps);
        p[i] = pi;
        if (out != nullptr) out[i] = P(pi);
      }
    });
  }

  OptimizerConfig c_;
  std::vector<Segment> segments_;
  Tensor m_, v_;  // (n) f32 each, segment order
};

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, std::vector<Segment> segments)
      : c_(c), segments_(std::move(segments)) {
    buf_ = Tensor::Zeros({TotalLength(segments_)}, DType::kF32);
  }

  void Step(const StepArgs& a) override {
    DispatchStep(a, [&](auto g_tag, auto p_tag) { Update<decltype(g_tag), decltype(p_tag)>(a); });
  }

  std::vector<std::pair<std::string, Tensor>> State() override { return {{"momentum", buf_}}; }
  int64_t StateBytes() const override { return buf_.numel() * 4; }

 private:
  // As torch.optim.SGD: g += wd*p; buf = momentum*buf + g (buf = g on the first step); p -= lr*buf.
  template <typename G, typename P>
  void Update(const StepArgs& a) {
    const float mu = c_.momentum, scale = a.grad_scale;
    const bool first = a.step == 1;
    float* buf_all = buf_.data<float>();
    ForEachSegment(segments_, [&](int64_t begin, int64_t end, int64_t base, const Segment& s) {
      float* p = a.master + s.offset;
      const G* g = static_cast<const G*>(a.grads) + s.offset;
      P* out = a.params ? static_cast<P*>(a.params) + s.offset : nullptr;
      float* buf = buf_all + base;
      const float wd = s.weight_decay ? c_.weight_decay : 0.0f;
      for (int64_t i = begin; i < end; ++i) {
        const float gi = static_cast<float>(g[i]) * scale + wd * p[i];
        const float b = (mu == 0.0f || first) ? gi : mu * buf[i] + gi;
        buf[i] = b;
        const float pi = p[i] - a.lr * b;
        p[i] = pi;
        if (out != nullptr) out[i] = P(pi);
      }
    });
  }

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
