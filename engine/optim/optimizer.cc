// AdamW and SGD on flat segments. Each update is one fused pass over (master, grad, state, and the
// low-precision copy), typed on the gradient and parameter dtypes, multi-threaded.
#include "engine/optim/optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/parallel.h"

namespace kiln::optim {
namespace {

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

// Runs body(begin, end, segment) over every segment with a gradient, in parallel.
template <typename Body>
void ForEachSegment(const std::vector<Segment>& segments, Body&& body) {
  for (const Segment& s : segments) {
    if (!s.has_grad) continue;
    ParallelForInline(s.length, 1 << 14, [&](int64_t begin, int64_t end) { body(begin, end, s); });
  }
}

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, std::vector<Segment> segments, int64_t span)
      : c_(c), segments_(std::move(segments)) {
    m_ = Tensor::Zeros({span}, DType::kF32);
    v_ = Tensor::Zeros({span}, DType::kF32);
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
    ForEachSegment(segments_, [&](int64_t begin, int64_t end, const Segment& s) {
      float* p = a.master + s.offset;
      const G* g = static_cast<const G*>(a.grads) + s.offset;
      P* out = a.params ? static_cast<P*>(a.params) + s.offset : nullptr;
      float* m = m_all + s.offset;
      float* v = v_all + s.offset;
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
  Sgd(const OptimizerConfig& c, std::vector<Segment> segments, int64_t span)
      : c_(c), segments_(std::move(segments)) {
    buf_ = Tensor::Zeros({span}, DType::kF32);
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
    ForEachSegment(segments_, [&](int64_t begin, int64_t end, const Segment& s) {
      float* p = a.master + s.offset;
      const G* g = static_cast<const G*>(a.grads) + s.offset;
      P* out = a.params ? static_cast<P*>(a.params) + s.offset : nullptr;
      float* buf = buf_all + s.offset;
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
                                                         std::vector<Segment> segments,
                                                         int64_t span) {
  for (const Segment& s : segments) {
    KILN_CHECK(s.offset >= 0 && s.offset + s.length <= span) << "segment outside the span";
  }
  if (config.name == "adamw") return std::make_unique<AdamW>(config, std::move(segments), span);
  if (config.name == "sgd") return std::make_unique<Sgd>(config, std::move(segments), span);
  return absl::InvalidArgumentError(absl::StrCat("train.optimizer.name: \"", config.name,
                                                 "\" is not one of adamw, sgd"));
}

}  // namespace kiln::optim
