// [gpu] Every CUDA kernel against the CPU kernel on random inputs, forward and backward, in f32
// (relative L2 within 1e-5) and bf16 / f16 (within 1e-2), with shapes that do not divide the
// kernels' tile sizes. Without a device each case is reported as skipped with the driver's reason.
#include <cstdlib>

#include "engine/ops/attrs/attention.h"
#include "engine/ops/attrs/elementwise.h"
#include "engine/ops/attrs/loss.h"
#include "engine/ops/attrs/matmul.h"
#include "engine/ops/attrs/norm.h"
#include "engine/optim/optimizer.h"
#include "kernels/cuda/device_optim.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kiln::testing {
namespace {

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

TEST_CASE("element-wise kernels match the CPU", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (DType dt : kFloatTypes) {
    const double tol = ToleranceFor(dt);
    const Tensor x = RandomTensor({3, 37, 65}, dt, 1, 2.0f);
    const Tensor y = RandomTensor({3, 37, 65}, dt, 2);
    CheckOpParity("gelu", {x}, {}, tol);
    CheckOpParity("silu", {x}, {}, tol);
    CheckOpParity("gelu_backward", {y, x}, {}, tol);
    CheckOpParity("silu_backward", {y, x}, {}, tol);
    CheckOpParity("mul", {x, y}, {}, tol);
    CheckOpParity("add", {x, y}, {}, tol);
    CheckOpParity("add", {x, RandomTensor({65}, dt, 3)}, {}, tol);  // bias broadcast
    CheckOpParity("scale", {x}, ops::ScaleAttrs{-0.37f}, tol);
    CheckOpParity("scale_by", {x, Tensor::FromFloats({0.25f}, {1})}, {}, tol);
    for (DType to : kFloatTypes) CheckOpParity("cast", {x}, ops::CastAttrs{to}, ToleranceFor(to));
    CheckOpParity("accumulate_grad", {x}, {}, tol);
    const Tensor gu = RandomTensor({4, 9, 2 * 45}, dt, 4);
    CheckOpParity("swiglu", {gu}, {}, tol);
    CheckOpParity("swiglu_backward", {RandomTensor({4, 9, 45}, dt, 5), gu}, {}, tol);
    CheckOpParity("dropout", {x, Tensor::FromVector<int64_t>({1234, 7}, {2})},
                  ops::DropoutAttrs{0.3f, 5}, tol);
  }
  CheckOpParity("broadcast_scalar", {Tensor::FromFloats({1.5f}, {1})},
                ops::BroadcastScalarAttrs{{7, 13}, DType::kF32, 2.0f}, 1e-6);
}

TEST_CASE("reductions match the CPU and repeat bit for bit", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (DType dt : kFloatTypes) {
    const double tol = ToleranceFor(dt);
    const Tensor x = RandomTensor({5, 1000, 41}, dt, 6);
    CheckOpParity("sum", {x}, {}, tol);
    CheckOpParity("mean", {x}, {}, tol);
    CheckOpParity("sum_to", {x}, ops::SumToAttrs{{41}}, tol);
    CheckOpParity("sum_to", {x}, ops::SumToAttrs{{1000, 41}}, tol);
    // Columns in whole 16-byte packs (Note [Column sums]), as GPT-2's bias gradients.
    CheckOpParity("sum_to", {RandomTensor({3, 700, 96}, dt, 16)}, ops::SumToAttrs{{96}}, tol);
  }
  const Tensor x = ToCuda(RandomTensor({1 << 20}, DType::kF32, 7));
  auto a = graph::RunOp("sum", {x});
  auto b = graph::RunOp("sum", {x});
  REQUIRE((a.ok() && b.ok()));
  REQUIRE((*a)[0].Item() == (*b)[0].Item());
}

TEST_CASE("layer norm and RMS norm match the CPU, forward and backward", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  // 200 columns: whole 16-byte packs in every type, a warp per row in the backward (one or two
  // packs a lane), as 768 bf16 (three) is; 1024 f32 packs, too many for a warp's lanes: the block
  // kernel; 65: element by element (Note [Norm kernels on the device], Note [Warp-per-row norm
  // backward]).
  for (const auto& [dt, cols] : {std::pair{DType::kF32, 200},
                                 {DType::kBF16, 200},
                                 {DType::kF16, 200},
                                 {DType::kBF16, 768},
                                 {DType::kF32, 1024},
                                 {DType::kF32, 65},
                                 {DType::kBF16, 65}}) {
    const double tol = ToleranceFor(dt);
    const Tensor x = RandomTensor({3, 67, cols}, dt, 8, 3.0f);
    const Tensor dy = RandomTensor({3, 67, cols}, dt, 9);
    const Tensor gamma = RandomTensor({cols}, DType::kF32, 10);
    const Tensor beta = RandomTensor({cols}, DType::kF32, 11);
    const ops::NormAttrs attrs{1e-5f};
    CheckOpParity("layer_norm", {x, gamma, beta}, attrs, tol);
    CheckOpParity("rms_norm", {x, gamma}, attrs, tol);
    auto ln = graph::RunOp("layer_norm", {x, gamma, beta}, attrs);
    auto rms = graph::RunOp("rms_norm", {x, gamma}, attrs);
    REQUIRE((ln.ok() && rms.ok()));
    CheckOpParity("layer_norm_backward", {dy, x, gamma, (*ln)[1], (*ln)[2]}, attrs, tol);
    CheckOpParity("rms_norm_backward", {dy, x, gamma, (*rms)[1]}, attrs, tol);
    // The _add forms (Note [Residual gradient in the norm backward]): dx + the residual gradient.
    const Tensor residual = RandomTensor({3, 67, cols}, dt, 19);
    CheckOpParity("layer_norm_backward_add", {dy, x, gamma, (*ln)[1], (*ln)[2], residual}, attrs,
                  tol);
    CheckOpParity("rms_norm_backward_add", {dy, x, gamma, (*rms)[1], residual}, attrs, tol);
  }
}

TEST_CASE("cross-entropy, embedding and its backward match the CPU", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  std::vector<int32_t> targets(3 * 17), ids(4 * 9);
  for (size_t i = 0; i < targets.size(); ++i) targets[i] = i % 7 == 3 ? -100 : (i * 131) % 1000;
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (i * 37) % 100;
  const Tensor t = Tensor::FromVector(targets, {3, 17});
  const Tensor id = Tensor::FromVector(ids, {4, 9});
  for (DType dt : kFloatTypes) {
    const double tol = ToleranceFor(dt);
    CheckOpParity("cross_entropy", {RandomTensor({3, 17, 1000}, dt, 12, 3.0f), t},
                  ops::CrossEntropyAttrs{-100}, tol);
    // A vocabulary that is no whole number of packs: element by element.
    CheckOpParity("cross_entropy", {RandomTensor({3, 17, 1001}, dt, 17, 3.0f), t},
                  ops::CrossEntropyAttrs{-100}, tol);
    for (float factor : {4.0f, 0.3f}) {  // the loss seed folded in (FuseCrossEntropyScale)
      CheckOpParity(
          "cross_entropy_scaled",
          {RandomTensor({3, 17, 1000}, dt, 15, 3.0f), t, Tensor::FromFloats({factor}, {1})},
          ops::CrossEntropyAttrs{-100}, tol);
    }
    CheckOpParity("embedding", {RandomTensor({100, 64}, dt, 13), id}, {}, tol);
    CheckOpParity("embedding_backward", {RandomTensor({4, 9, 64}, dt, 14), id},
                  ops::EmbeddingAttrs{100}, tol);
  }
}

// The embedding gradient as a token batch makes it (Note [Deterministic embedding gradient]): one
// id at 4 in 5 positions — more rows than one sorted list holds, so its sum is carried over lists
// — others spread over the vocabulary, 1600 ids (no whole number of windows) and 130 columns (two
// column tiles, the second partly empty). Two runs give the same bits.
TEST_CASE("embedding backward with a frequent id matches the CPU and repeats bit for bit",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  std::vector<int32_t> ids(2 * 800);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % 5 < 4 ? 7 : (i * 37) % 300;
  const Tensor id = Tensor::FromVector(ids, {2, 800});
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor dy = RandomTensor({2, 800, 130}, dt, 18);
    CheckOpParity("embedding_backward", {dy, id}, ops::EmbeddingAttrs{300}, ToleranceFor(dt));
    auto a = graph::RunOp("embedding_backward", {ToCuda(dy), ToCuda(id)}, ops::EmbeddingAttrs{300});
    auto b = graph::RunOp("embedding_backward", {ToCuda(dy), ToCuda(id)}, ops::EmbeddingAttrs{300});
    REQUIRE((a.ok() && b.ok()));
    REQUIRE((*a)[0].ToFloats() == (*b)[0].ToFloats());
  }
}

TEST_CASE("RoPE and fused attention match the CPU, forward and backward", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  struct Geometry {
    int heads, kv_heads, head_dim, seq;
    bool causal;
  };
  const Geometry geometries[] = {
      {4, 2, 32, 70, true}, {2, 2, 64, 129, true}, {2, 1, 128, 40, false}, {3, 3, 16, 5, true}};
  for (DType dt : kFloatTypes) {
    const double tol = ToleranceFor(dt);
    for (const Geometry& g : geometries) {
      INFO("H " << g.heads << " Hkv " << g.kv_heads << " D " << g.head_dim << " T " << g.seq);
      const int64_t width = int64_t{g.heads + 2 * g.kv_heads} * g.head_dim;
      const Tensor qkv = RandomTensor({2, g.seq, width}, dt, 15);
      CheckOpParity("rope", {qkv}, ops::RopeAttrs{g.heads, g.kv_heads, g.head_dim, 10000, false},
                    tol);
      CheckOpParity("rope", {qkv}, ops::RopeAttrs{g.heads, g.kv_heads, g.head_dim, 500, true}, tol);
      const ops::AttentionAttrs attrs{g.heads, g.kv_heads, g.head_dim, g.causal, 0.0f};
      CheckOpParity("attention", {qkv}, attrs, tol);
      auto fwd = graph::RunOp("attention", {qkv}, attrs);
      REQUIRE(fwd.ok());
      const Tensor dout = RandomTensor((*fwd)[0].sizes(), dt, 16);
      CheckOpParity("attention_backward", {dout, qkv, (*fwd)[0], (*fwd)[1]}, attrs, tol);
    }
  }
}

TEST_CASE("cuBLASLt matmul matches the CPU for every transpose and batch layout", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (DType dt : kFloatTypes) {
    const double tol = ToleranceFor(dt);
    const Tensor a = RandomTensor({3, 17, 40}, dt, 17);
    const Tensor at = RandomTensor({3, 40, 17}, dt, 18);
    const Tensor at2 = RandomTensor({40, 17}, dt, 27);  // trans_a with a shared b takes a 2-D a
    const Tensor b = RandomTensor({40, 24}, dt, 19);
    const Tensor bt = RandomTensor({24, 40}, dt, 20);
    const Tensor bb = RandomTensor({3, 40, 24}, dt, 21);
    CheckOpParity("matmul", {a, b}, ops::MatmulAttrs{false, false}, tol);
    CheckOpParity("matmul", {a, bt}, ops::MatmulAttrs{false, true}, tol);
    CheckOpParity("matmul", {at2, b}, ops::MatmulAttrs{true, false}, tol);
    CheckOpParity("matmul", {at2, bt}, ops::MatmulAttrs{true, true}, tol);
    CheckOpParity("matmul", {a, bb}, ops::MatmulAttrs{false, false}, tol);
    CheckOpParity("matmul", {at, bb}, ops::MatmulAttrs{true, false}, tol);
    CheckOpParity("matmul", {at, RandomTensor({3, 24, 40}, dt, 22)}, ops::MatmulAttrs{true, true},
                  tol);
  }
}

TEST_CASE("cuBLASLt matmul_bias (bias epilogue) matches the CPU's oneDNN matmul_bias",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {  // the dtypes FuseMatmulBias fuses
    const double tol = ToleranceFor(dt);
    const Tensor a = RandomTensor({3, 17, 40}, dt, 23);
    const Tensor bias = RandomTensor({24}, dt, 24);
    CheckOpParity("matmul_bias", {a, RandomTensor({40, 24}, dt, 25), bias},
                  ops::MatmulAttrs{false, false}, tol);
    CheckOpParity("matmul_bias", {a, RandomTensor({24, 40}, dt, 26), bias},
                  ops::MatmulAttrs{false, true}, tol);
  }
}

// Note [GELU in the matmul epilogue]: with cuBLASLt's GELU_AUX_BIAS / DGELU epilogues (DGELU asked
// for: Note [DGELU epilogue off by default]), and with them turned off (KILN_CUDA_GELU_EPILOGUE=0:
// the plain matmul, then the gelu kernel), and for an N that is not a multiple of 8 (which the
// epilogue cannot take).
TEST_CASE("cuBLASLt GELU epilogues (matmul_bias_gelu, matmul_dgelu) match the CPU", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  setenv("KILN_CUDA_DGELU_EPILOGUE", "1", 1);
  for (const char* epilogue : {"1", "0"}) {
    setenv("KILN_CUDA_GELU_EPILOGUE", epilogue, 1);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (int64_t n : {48, 20}) {
        INFO("KILN_CUDA_GELU_EPILOGUE=" << epilogue << " " << DTypeName(dt) << " N " << n);
        const double tol = ToleranceFor(dt);
        const Tensor a = RandomTensor({3, 17, 40}, dt, 31);
        const Tensor w = RandomTensor({40, n}, dt, 32);
        const Tensor bias = RandomTensor({n}, dt, 33);
        CheckOpParity("matmul_bias_gelu", {a, w, bias}, ops::MatmulAttrs{false, false}, tol);
        CheckOpParity("matmul_bias_gelu", {a, RandomTensor({n, 40}, dt, 34), bias},
                      ops::MatmulAttrs{false, true}, tol);
        // Backward: dpre = (dout w^T) * gelu'(pre), dout (3, 17, 24) against w (n, 24).
        const Tensor dout = RandomTensor({3, 17, 24}, dt, 35);
        const Tensor pre = RandomTensor({3, 17, n}, dt, 36);
        CheckOpParity("matmul_dgelu", {dout, RandomTensor({n, 24}, dt, 37), pre},
                      ops::MatmulAttrs{false, true}, tol);
      }
    }
  }
  unsetenv("KILN_CUDA_GELU_EPILOGUE");
  unsetenv("KILN_CUDA_DGELU_EPILOGUE");
}

// matmul_dgelu_bgrad (Note [Bias gradient in the matmul epilogue]): with both epilogues, with the
// DGELU epilogue and the column-sum kernel (KILN_CUDA_BGRAD_EPILOGUE=0), unfused by default (Note
// [DGELU epilogue off by default]) and unfused throughout (KILN_CUDA_GELU_EPILOGUE=0); N = 20
// cannot take the epilogues at all.
TEST_CASE("cuBLASLt DGELU_BGRAD epilogue (matmul_dgelu_bgrad) matches the CPU", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  struct Setting {
    const char* gelu;
    const char* dgelu;
    const char* bias_grad;
  };
  const Setting settings[] = {{"1", "1", "1"}, {"1", "1", "0"}, {"1", "0", "1"}, {"0", "1", "1"}};
  for (const auto& [gelu, dgelu, bias_grad] : settings) {
    setenv("KILN_CUDA_GELU_EPILOGUE", gelu, 1);
    setenv("KILN_CUDA_DGELU_EPILOGUE", dgelu, 1);
    setenv("KILN_CUDA_BGRAD_EPILOGUE", bias_grad, 1);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (int64_t n : {48, 20}) {
        INFO("KILN_CUDA_GELU_EPILOGUE=" << gelu << " KILN_CUDA_DGELU_EPILOGUE=" << dgelu
                                        << " KILN_CUDA_BGRAD_EPILOGUE=" << bias_grad << " "
                                        << DTypeName(dt) << " N " << n);
        const Tensor dout = RandomTensor({3, 17, 24}, dt, 38);
        const Tensor pre = RandomTensor({3, 17, n}, dt, 39);
        CheckOpParity("matmul_dgelu_bgrad", {dout, RandomTensor({n, 24}, dt, 40), pre},
                      ops::MatmulAttrs{false, true}, ToleranceFor(dt));
      }
    }
  }
  unsetenv("KILN_CUDA_GELU_EPILOGUE");
  unsetenv("KILN_CUDA_DGELU_EPILOGUE");
  unsetenv("KILN_CUDA_BGRAD_EPILOGUE");
}

// matmul_bgrad: a weight gradient a^T dy with dy's column sums, through cuBLASLt's BGRADA
// epilogue and through the column-sum kernel (KILN_CUDA_BGRAD_EPILOGUE=0).
TEST_CASE("cuBLASLt BGRADA epilogue (matmul_bgrad) matches the CPU", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  for (const char* bias_grad : {"1", "0"}) {
    setenv("KILN_CUDA_BGRAD_EPILOGUE", bias_grad, 1);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (int64_t n : {48, 20}) {
        INFO("KILN_CUDA_BGRAD_EPILOGUE=" << bias_grad << " " << DTypeName(dt) << " N " << n);
        const Tensor a = RandomTensor({51, 40}, dt, 41);  // (rows, K): the layer's input
        const Tensor dy = RandomTensor({51, n}, dt, 42);  // (rows, N): its output gradient
        CheckOpParity("matmul_bgrad", {a, dy}, ops::MatmulAttrs{true, false}, ToleranceFor(dt));
      }
      // No rows (an empty inner dimension): the node runs, and both gradients are zeros.
      CheckOpParity("matmul_bgrad", {RandomTensor({0, 40}, dt, 43), RandomTensor({0, 24}, dt, 44)},
                    ops::MatmulAttrs{true, false}, ToleranceFor(dt));
    }
  }
  unsetenv("KILN_CUDA_BGRAD_EPILOGUE");
}

// The device's fused AdamW (optim.cu) against engine/optim's AdamW over the same segments for three
// steps: one at offset 0 of 5 elements (a pack and a tail), one at an odd offset spanning two
// chunks (element by element), one aligned spanning two chunks (packs, then a short chunk), and
// one without a gradient (left alone). f32 gradients into f32 weights, and bf16 gradients with a
// bf16 weight copy written beside the f32 master.
TEST_CASE("fused AdamW matches engine/optim's AdamW, in packs and element by element",
          "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  const std::vector<optim::Segment> segments = {{0, 5, true, true},
                                                {5, 8195, false, true},
                                                {8200, 9000, true, true},
                                                {17200, 37, true, false}};
  const int64_t span = 17240;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    INFO(DTypeName(dt) << " gradients");
    const Tensor initial = RandomTensor({span}, DType::kF32, 41);
    optim::OptimizerConfig config;
    config.weight_decay = 0.1f;
    auto cpu_opt = optim::MakeOptimizer(config, segments, span);
    REQUIRE(cpu_opt.ok());
    std::vector<kernels::cuda::DeviceSegment> device_segments;
    for (const optim::Segment& s : segments) {
      device_segments.push_back({s.offset, s.length, s.weight_decay, s.has_grad});
    }
    kernels::cuda::DeviceAdamWConfig device_config;
    device_config.weight_decay = config.weight_decay;
    auto gpu_opt =
        kernels::cuda::DeviceAdamW::Create(device_config, device_segments, span, Device::CUDA(0));
    REQUIRE(gpu_opt.ok());
    Tensor cpu_master = initial.Clone(), gpu_master = ToCuda(initial);
    const bool copy = dt != DType::kF32;
    Tensor cpu_params = copy ? Tensor::Zeros({span}, dt) : Tensor();
    Tensor gpu_params = copy ? Tensor::Zeros({span}, dt, Device::CUDA(0)) : Tensor();
    for (int step = 1; step <= 3; ++step) {
      const Tensor grads = RandomTensor({span}, dt, 41 + step);
      optim::StepArgs a;
      a.master = cpu_master.data<float>();
      a.grads = grads.raw_data();
      a.grad_dtype = dt;
      if (copy) {
        a.params = cpu_params.raw_data();
        a.param_dtype = dt;
      }
      a.grad_scale = 0.5f;
      a.lr = 1e-2f;
      a.step = step;
      (*cpu_opt)->Step(a);
      (*gpu_opt)->Step(gpu_master, ToCuda(grads), gpu_params, 0.5f, 1e-2f, step);
    }
    KILN_REQUIRE_CLOSE(gpu_master.ToFloats(), cpu_master.ToFloats(), 1e-6);
    if (copy) KILN_REQUIRE_CLOSE(gpu_params.ToFloats(), cpu_params.ToFloats(), 1e-6);
    // The segment without a gradient kept its weights.
    const std::vector<float> before = initial.ToFloats(), after = gpu_master.ToFloats();
    for (int64_t i = 17200; i < 17237; ++i) REQUIRE(after[i] == before[i]);
  }
}

}  // namespace
}  // namespace kiln::testing
