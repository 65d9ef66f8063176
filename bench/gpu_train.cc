// Kiln's side of bench/gpu_train.sh: GPT-2 124M (L12 H12 D768, T1024, vocab 50304) training steps
// in bf16 on one GPU — the CUDA executor and kernels, device AdamW with f32 master weights —
// timed after warm-up. Prints one JSON line: tokens/s, step time, peak device memory, losses.
//
//   gpu_train [--batch 8] [--steps 10] [--warmup 3] [--layers 12] [--seq 1024]
// (gpu_train-emulated, on the kernel emulation, is for a dry run of this program without a GPU:
//  e.g. --layers 1 --batch 1 --seq 128 --steps 1 --warmup 1.)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "engine/core/device_runtime.h"
#include "engine/graph/executor.h"
#include "engine/nn/model.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/device_optim.h"

namespace {

int Flag(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kiln;
  const int batch = Flag(argc, argv, "--batch", 8), steps = Flag(argc, argv, "--steps", 10);
  const int warmup = Flag(argc, argv, "--warmup", 3), layers = Flag(argc, argv, "--layers", 12);
  const int seq = Flag(argc, argv, "--seq", 1024);  // shorter only for dry runs
  const Device dev = Device::CUDA(0);
  if (absl::Status s = CheckDeviceAvailable(dev); !s.ok()) {
    std::fprintf(stderr, "gpu_train: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  nn::ModelConfig c;
  c.family = "gpt2";
  c.n_layer = layers;
  c.n_head = 12;
  c.n_kv_head = 12;
  c.d_model = 768;
  c.d_ff = 3072;
  c.vocab_size = 50304;  // 50257 padded to a multiple of 128
  c.max_seq_len = seq;
  nn::GraphOptions go;
  go.batch = batch;
  go.seq_len = seq;
  go.compute = DType::kBF16;
  auto model = nn::BuildModel(c, go);
  if (!model.ok()) {
    std::fprintf(stderr, "gpu_train: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  graph::ExecutorOptions eo;
  eo.device = dev;
  eo.device_graphs = true;  // Note [Device graphs]: one launch per step from the third step on
  graph::Graph g = model->graph;
  auto exec_or = graph::Executor::Create(std::move(g), eo);
  if (!exec_or.ok()) {
    std::fprintf(stderr, "gpu_train: %s\n", std::string(exec_or.status().message()).c_str());
    return 1;
  }
  graph::Executor& exec = **exec_or;
  const graph::MemoryPlan& plan = exec.memory_plan();
  const int64_t n = plan.param_elements;
  // The model's own init (engine/nn/param_table.h: norm gains 1, biases 0, weights normal with
  // their std), as PyTorch's GPT-2 starts, so both sides' losses move alike; f32 master on the
  // device.
  std::vector<float> init(static_cast<size_t>(n));
  std::mt19937_64 rng(1);
  for (const nn::ParamEntry& e : model->params.entries) {
    float* dst = init.data() + plan.param_offset[e.graph_param] + e.offset;
    std::normal_distribution<float> normal(0.0f, e.init.std);
    for (int64_t i = 0; i < e.numel(); ++i) {
      dst[i] = e.init.kind == nn::ParamInit::kOnes    ? 1.0f
               : e.init.kind == nn::ParamInit::kZeros ? 0.0f
                                                      : normal(rng);
    }
  }
  const bool separate = exec.flat_params().dtype() != DType::kF32;
  Tensor master = separate ? Tensor::Zeros({n}, DType::kF32, dev) : exec.flat_params();
  master.CopyFrom(Tensor::FromFloats(init, {n}));
  if (separate) exec.flat_params().CopyFrom(master);
  std::vector<kernels::cuda::DeviceSegment> segments;
  int64_t num_params = 0;
  for (size_t p = 0; p < plan.param_offset.size(); ++p) {
    segments.push_back({plan.param_offset[p], plan.param_numel[p], true,
                        model->graph.grads()[p] != graph::kNoValue});
    num_params += plan.param_numel[p];
  }
  kernels::cuda::DeviceAdamWConfig oc;
  oc.weight_decay = 0.1f;
  auto opt = kernels::cuda::DeviceAdamW::Create(oc, segments, n, dev);
  if (!opt.ok()) {
    std::fprintf(stderr, "gpu_train: %s\n", std::string(opt.status().message()).c_str());
    return 1;
  }
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * seq + 1);
  std::uniform_int_distribution<int32_t> token(0, 50256);
  for (int32_t& t : tokens) t = token(rng);
  const Tensor inputs =
      Tensor::FromVector(std::vector<int32_t>(tokens.begin(), tokens.end() - 1), {batch, seq});
  const Tensor targets =
      Tensor::FromVector(std::vector<int32_t>(tokens.begin() + 1, tokens.end()), {batch, seq});
  DeviceRuntime& rt = RuntimeFor(dev);
  double first_loss = 0, last_loss = 0, seconds = 0;
  kernels::cuda::GradStatsReducer grad_stats;
  for (int step = 0; step < warmup + steps; ++step) {
    rt.Synchronize(dev);
    const auto t0 = std::chrono::steady_clock::now();
    exec.ZeroGrads();
    exec.value(model->inputs).CopyFrom(inputs);
    exec.value(model->targets).CopyFrom(targets);
    exec.value(model->backward.loss_seed).Fill(1.0f);
    exec.Run();
    const kernels::cuda::GradStats stats = grad_stats.Compute(exec.flat_grads());
    const double norm = std::sqrt(stats.squared_norm);
    const float clip = static_cast<float>(std::min(1.0, 1.0 / (norm + 1e-6)));  // clip at 1
    (*opt)->Step(master, exec.flat_grads(), separate ? exec.flat_params() : Tensor(), clip, 6e-4f,
                 step + 1);
    const double loss = exec.value(model->loss).Item();  // synchronizes
    rt.Synchronize(dev);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step >= warmup) seconds += dt;
  }
  const kernels::cuda::CachingAllocatorStats mem =
      kernels::cuda::DeviceCachingAllocator(0)->Stats();
  // Where the time goes, for the log: one more step with the device synchronized around every node
  // (Note [Profiling on a device]); after the timed steps, so it changes none of their figures.
  exec.SetProfiling(true);
  exec.ZeroGrads();
  exec.Run();
  exec.SetProfiling(false);
  std::fprintf(stderr, "per-op device time of one step (synchronized around each node):\n%s",
               exec.ProfileReport().c_str());
  const double tokens_per_s = static_cast<double>(batch) * seq * steps / seconds;
  std::string refusal = exec.graph_refusal();
  std::replace(refusal.begin(), refusal.end(), '"', '\'');
  std::printf(
      "{\"system\": \"kiln\", \"gpu\": \"%s\", \"batch\": %d, \"seq\": %d, \"layers\": %d, "
      "\"params\": %lld, \"tokens_per_s\": %.1f, \"step_ms\": %.2f, \"peak_allocated_mib\": %.1f, "
      "\"peak_reserved_mib\": %.1f, \"loss_first\": %.4f, \"loss_last\": %.4f, "
      "\"graph_launches\": %lld, \"graph_refusal\": \"%s\"}\n",
      rt.DeviceName(0).c_str(), batch, seq, layers, static_cast<long long>(num_params),
      tokens_per_s, 1e3 * seconds / steps, mem.peak_allocated_bytes / 1048576.0,
      mem.peak_reserved_bytes / 1048576.0, first_loss, last_loss,
      static_cast<long long>(exec.graph_launches()), refusal.c_str());
  return 0;
}
