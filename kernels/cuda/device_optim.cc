// DeviceAdamW and GradStatsReducer: host-side set-up and launches of optim.cu and reduce.cu.
#include "kernels/cuda/device_optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/core/device_runtime.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::kernels::cuda {

absl::StatusOr<std::unique_ptr<DeviceAdamW>> DeviceAdamW::Create(
    const DeviceAdamWConfig& config, std::vector<DeviceSegment> segments, int64_t span,
    Device device) {
  KILN_RETURN_IF_ERROR(CheckDeviceAvailable(device));
  KILN_ASSIGN_OR_RETURN(const AdamTable table, MakeAdamTable(segments, span));
  std::unique_ptr<DeviceAdamW> o(new DeviceAdamW());
  o->config_ = config;
  o->device_ = device;
  o->m_ = Tensor::Zeros({span}, DType::kF32, device);  // Note [Device AdamW state layout]
  o->v_ = Tensor::Zeros({span}, DType::kF32, device);
  o->num_chunks_ = static_cast<int64_t>(table.chunks.size());
  const int64_t bytes = static_cast<int64_t>(table.chunks.size() * sizeof(AdamChunk));
  o->chunk_table_ = Tensor::Zeros({std::max<int64_t>(bytes, 1)}, DType::kU8, device);
  if (bytes > 0) {
    Tensor host = Tensor::Zeros({bytes}, DType::kU8);
    std::memcpy(host.raw_data(), table.chunks.data(), static_cast<size_t>(bytes));
    o->chunk_table_.CopyFrom(host);
  }
  return o;
}

DeviceAdamW::~DeviceAdamW() = default;

void DeviceAdamW::Step(const Tensor& master, const Tensor& grads, const Tensor& params,
                       float grad_scale, float lr, int64_t step) {
  CheckTensor(master, DType::kF32, "AdamW master");
  CheckTensor(grads, grads.dtype(), "AdamW grads");
  KILN_CHECK_EQ(master.numel(), grads.numel());
  KILN_CHECK_EQ(master.numel(), m_.numel()) << "AdamW master and moments cover different spans";
  const double bc1 = 1.0 - std::pow(static_cast<double>(config_.beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(config_.beta2), static_cast<double>(step));
  AdamLaunch a;
  a.master = master.data<float>();
  a.grads = grads.raw_data();
  a.grad_type = ToFloatType(grads.dtype());
  if (params.defined()) {
    CheckTensor(params, params.dtype(), "AdamW params");
    KILN_CHECK_EQ(params.numel(), master.numel());
    a.params = params.raw_data();
    a.param_type = ToFloatType(params.dtype());
  }
  a.exp_avg = m_.data<float>();
  a.exp_avg_sq = v_.data<float>();
  a.chunks = static_cast<const AdamChunk*>(chunk_table_.raw_data());
  a.num_chunks = num_chunks_;
  a.beta1 = config_.beta1;
  a.beta2 = config_.beta2;
  a.eps = config_.eps;
  a.step_size = static_cast<float>(lr / bc1);
  a.inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
  a.grad_scale = grad_scale;
  a.lr_weight_decay = lr * config_.weight_decay;
  LaunchAdamW(a, LaunchStreamFor(master));
}

GradStats GradStatsReducer::Compute(const Tensor& flat) {
  CheckTensor(flat, flat.dtype(), "gradient buffer");
  const Device device = flat.device();
  // Partials, then the result (2 f64) at an 8-byte aligned offset.
  const size_t ws_bytes = (NormStatsWorkspaceBytes(flat.numel()) + 7) / 8 * 8;
  const size_t needed = ws_bytes + 2 * sizeof(double);
  if (!workspace_.defined() || workspace_.device() != device || workspace_.nbytes() < needed) {
    workspace_ = Tensor::Zeros({static_cast<int64_t>(needed)}, DType::kU8, device);
  }
  double* result = reinterpret_cast<double*>(static_cast<char*>(workspace_.raw_data()) + ws_bytes);
  LaunchNormStats(ToFloatType(flat.dtype()), flat.raw_data(), flat.numel(), result,
                  workspace_.raw_data(), LaunchStreamFor(flat));
  double host[2];
  RuntimeFor(device).Copy(host, result, sizeof(host), device);  // the one wait
  return {host[0], host[1] == 1.0};
}

}  // namespace kiln::kernels::cuda
