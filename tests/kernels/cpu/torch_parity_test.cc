// Parity of the CPU kernels with PyTorch 1.13 (float64 references from torch_parity.py, run with
// /usr/bin/python3): attention forward and backward (causal GQA), rope (Hugging Face rotate-half),
// layer_norm forward and backward, rms_norm (Hugging Face LlamaRMSNorm) forward and backward,
// cross_entropy (loss and the gradient of the mean) and GELU (tanh) forward and backward. All in
// f32 with relative L2 <= 1e-5. A missing /usr/bin/python3 or torch fails the test.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/norm.h"
#include "tests/kernels/cpu/kernel_runner.h"
#include "tests/kernels/cpu/test_util.h"

namespace kiln::testing {
namespace {

constexpr char kPython[] = "/usr/bin/python3";

// One case for torch_parity.py: inputs written as raw little-endian files plus meta.json, the
// script run, outputs read back.
class TorchCase {
 public:
  TorchCase(const std::string& name) : name_(name), dir_(TempDir("torch_" + name)) {}

  void Input(const std::string& name, const Tensor& t) {
    KILN_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kI32);
    std::ofstream(dir_ + "/" + name + ".bin", std::ios::binary)
        .write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
    std::ostringstream spec;
    spec << "{\"dtype\": \"" << (t.dtype() == DType::kF32 ? "f32" : "i32") << "\", \"shape\": [";
    for (int i = 0; i < t.dim(); ++i) spec << (i ? ", " : "") << t.size(i);
    spec << "]}";
    inputs_[name] = spec.str();
  }
  void Param(const std::string& key, double value) {
    std::ostringstream v;
    v.precision(17);
    v << value;
    params_[key] = v.str();
  }

  // Runs PyTorch; REQUIREs that it worked.
  void Run() {
    std::ofstream meta(dir_ + "/meta.json");
    meta << "{\"case\": \"" << name_ << "\", \"params\": {" << Join(params_) << "}, \"inputs\": {"
         << Join(inputs_) << "}}";
    meta.close();
    static const bool have_torch = [] {
      const std::string probe = std::string(kPython) + " -c 'import torch' > /dev/null 2>&1";
      return std::system(probe.c_str()) == 0;
    }();
    if (!have_torch) {
      FAIL(kPython << " with torch is required for the PyTorch parity tests (Debian packages "
                      "python3-torch and python3-numpy; tools/test.sh installs them)");
    }
    const std::string script = Runfile("tests/kernels/cpu/torch_parity.py");
    const std::string cmd = std::string(kPython) + " " + script + " " + dir_ + " 2>&1";
    INFO("command: " << cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
  }

  std::vector<float> Output(const std::string& name, int64_t numel) const {
    std::vector<float> v(static_cast<size_t>(numel));
    std::ifstream in(dir_ + "/" + name + ".out.bin", std::ios::binary);
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(numel * sizeof(float)));
    KILN_CHECK(in.gcount() == static_cast<std::streamsize>(numel * sizeof(float)))
        << "torch output " << name << " has the wrong size";
    return v;
  }

 private:
  static std::string Join(const std::map<std::string, std::string>& kv) {
    std::string out;
    for (const auto& [k, v] : kv) out += (out.empty() ? "\"" : ", \"") + k + "\": " + v;
    return out;
  }

  std::string name_, dir_;
  std::map<std::string, std::string> inputs_, params_;
};

constexpr DType kF32 = DType::kF32;

TEST_CASE("attention forward and backward match PyTorch (causal GQA)", "[kernels][torch]") {
  const int64_t batch = 2, seq = 37;
  const int n_head = 6, n_kv = 2, d = 24;
  const Shape qkv_shape{batch, seq, (n_head + 2 * n_kv) * d}, out_shape{batch, seq, n_head * d};
  const Tensor qkv = RandomTensor(qkv_shape, kF32, 71, -2.0f, 2.0f);
  const Tensor dout = RandomTensor(out_shape, kF32, 72);
  const ops::AttentionAttrs attrs{n_head, n_kv, d, true, 0.0f};
  const std::vector<Tensor> fwd =
      RunKernel("attention", kF32, {qkv},
                {Tensor::Zeros(out_shape, kF32), Tensor::Zeros({batch, n_head, seq}, kF32)}, attrs);
  const Tensor dqkv = RunKernel("attention_backward", kF32, {dout, qkv, fwd[0], fwd[1]},
                                {Tensor::Zeros(qkv_shape, kF32)}, attrs)[0];
  TorchCase tc("attention");
  tc.Input("qkv", qkv);
  tc.Input("dout", dout);
  tc.Param("n_head", n_head);
  tc.Param("n_kv_head", n_kv);
  tc.Param("head_dim", d);
  tc.Run();
  KILN_REQUIRE_CLOSE(fwd[0].ToFloats(), tc.Output("out", fwd[0].numel()), kTolF32);
  KILN_REQUIRE_CLOSE(fwd[1].ToFloats(), tc.Output("lse", fwd[1].numel()), kTolF32);
  KILN_REQUIRE_CLOSE(dqkv.ToFloats(), tc.Output("dqkv", dqkv.numel()), kTolF32);
}

TEST_CASE("rope matches Hugging Face rotate-half", "[kernels][torch]") {
  const int n_head = 6, n_kv = 2, d = 24;
  const Shape shape{2, 37, (n_head + 2 * n_kv) * d};
  const Tensor qkv = RandomTensor(shape, kF32, 73);
  for (float theta : {10000.0f, 500000.0f}) {
    INFO("theta " << theta);
    const Tensor out = RunKernel("rope", kF32, {qkv}, {Tensor::Zeros(shape, kF32)},
                                 ops::RopeAttrs{n_head, n_kv, d, theta, false})[0];
    TorchCase tc("rope");
    tc.Input("qkv", qkv);
    tc.Param("n_head", n_head);
    tc.Param("n_kv_head", n_kv);
    tc.Param("head_dim", d);
    tc.Param("theta", theta);
    tc.Run();
    KILN_REQUIRE_CLOSE(out.ToFloats(), tc.Output("out", out.numel()), kTolF32);
  }
}

TEST_CASE("layer_norm forward and backward match PyTorch", "[kernels][torch]") {
  const int64_t rows = 37, cols = 72;
  const Tensor x = RandomTensor({rows, cols}, kF32, 74, -2.0f, 3.0f);
  const Tensor gamma = RandomTensor({cols}, kF32, 75, 0.5f, 1.5f);
  const Tensor beta = RandomTensor({cols}, kF32, 76);
  const Tensor dy = RandomTensor({rows, cols}, kF32, 77);
  const ops::NormAttrs attrs{1e-5f};
  const std::vector<Tensor> fwd = RunKernel(
      "layer_norm", kF32, {x, gamma, beta},
      {Tensor::Zeros({rows, cols}, kF32), Tensor::Zeros({rows}, kF32), Tensor::Zeros({rows}, kF32)},
      attrs);
  const std::vector<Tensor> bwd = RunKernel(
      "layer_norm_backward", kF32, {dy, x, gamma, fwd[1], fwd[2]},
      {Tensor::Zeros({rows, cols}, kF32), Tensor::Zeros({cols}, kF32), Tensor::Zeros({cols}, kF32)},
      attrs);
  TorchCase tc("layer_norm");
  tc.Input("x", x);
  tc.Input("gamma", gamma);
  tc.Input("beta", beta);
  tc.Input("dy", dy);
  tc.Param("eps", 1e-5f);
  tc.Run();
  KILN_REQUIRE_CLOSE(fwd[0].ToFloats(), tc.Output("y", rows * cols), kTolF32);
  KILN_REQUIRE_CLOSE(fwd[1].ToFloats(), tc.Output("mean", rows), kTolF32);
  KILN_REQUIRE_CLOSE(fwd[2].ToFloats(), tc.Output("rstd", rows), kTolF32);
  KILN_REQUIRE_CLOSE(bwd[0].ToFloats(), tc.Output("dx", rows * cols), kTolF32);
  KILN_REQUIRE_CLOSE(bwd[1].ToFloats(), tc.Output("dgamma", cols), kTolF32);
  KILN_REQUIRE_CLOSE(bwd[2].ToFloats(), tc.Output("dbeta", cols), kTolF32);
}

TEST_CASE("rms_norm matches Hugging Face LlamaRMSNorm", "[kernels][torch]") {
  const int64_t rows = 37, cols = 72;
  const Tensor x = RandomTensor({rows, cols}, kF32, 78, -2.0f, 3.0f);
  const Tensor gamma = RandomTensor({cols}, kF32, 79, 0.5f, 1.5f);
  const Tensor dy = RandomTensor({rows, cols}, kF32, 80);
  const ops::NormAttrs attrs{1e-6f};
  const std::vector<Tensor> fwd =
      RunKernel("rms_norm", kF32, {x, gamma},
                {Tensor::Zeros({rows, cols}, kF32), Tensor::Zeros({rows}, kF32)}, attrs);
  const std::vector<Tensor> bwd =
      RunKernel("rms_norm_backward", kF32, {dy, x, gamma, fwd[1]},
                {Tensor::Zeros({rows, cols}, kF32), Tensor::Zeros({cols}, kF32)}, attrs);
  TorchCase tc("rms_norm");
  tc.Input("x", x);
  tc.Input("gamma", gamma);
  tc.Input("dy", dy);
  tc.Param("eps", 1e-6f);
  tc.Run();
  KILN_REQUIRE_CLOSE(fwd[0].ToFloats(), tc.Output("y", rows * cols), kTolF32);
  KILN_REQUIRE_CLOSE(bwd[0].ToFloats(), tc.Output("dx", rows * cols), kTolF32);
  KILN_REQUIRE_CLOSE(bwd[1].ToFloats(), tc.Output("dgamma", cols), kTolF32);
}

TEST_CASE("cross_entropy loss and gradient of the mean match PyTorch", "[kernels][torch]") {
  const int64_t rows = 37, vocab = 1000;
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 7919) % vocab);
  targets[5] = targets[30] = -100;
  const Tensor t = Tensor::FromVector(targets, {rows});
  const Tensor logits = RandomTensor({rows, vocab}, kF32, 81, -8.0f, 8.0f);
  const std::vector<Tensor> out = RunKernel(
      "cross_entropy", kF32, {logits, t},
      {Tensor::Zeros({1}, kF32), Tensor::Zeros({rows, vocab}, kF32)}, ops::CrossEntropyAttrs{-100});
  TorchCase tc("cross_entropy");
  tc.Input("logits", logits);
  tc.Input("targets", t);
  tc.Param("ignore_index", -100);
  tc.Run();
  KILN_REQUIRE_CLOSE(out[0].ToFloats(), tc.Output("loss", 1), kTolF32);
  KILN_REQUIRE_CLOSE(out[1].ToFloats(), tc.Output("dlogits", rows * vocab), kTolF32);
}

TEST_CASE("gelu (tanh) forward and backward match PyTorch", "[kernels][torch]") {
  const Shape shape{37, 129};
  const Tensor x = RandomTensor(shape, kF32, 82, -6.0f, 6.0f);
  const Tensor dy = RandomTensor(shape, kF32, 83);
  const Tensor y = RunKernel("gelu", kF32, {x}, {Tensor::Zeros(shape, kF32)})[0];
  const Tensor dx = RunKernel("gelu_backward", kF32, {dy, x}, {Tensor::Zeros(shape, kF32)})[0];
  TorchCase tc("gelu_tanh");
  tc.Input("x", x);
  tc.Input("dy", dy);
  tc.Run();
  KILN_REQUIRE_CLOSE(y.ToFloats(), tc.Output("y", y.numel()), kTolF32);
  KILN_REQUIRE_CLOSE(dx.ToFloats(), tc.Output("dx", dx.numel()), kTolF32);
}

}  // namespace
}  // namespace kiln::testing
