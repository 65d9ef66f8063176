// [gpu] The NCCL backend behind the Communicator: every collective on CUDA tensors with world 1,
// and with one rank per GPU (threads of this process, an in-process store) where several GPUs
// exist. Without a device the NCCL factory's one-line refusal is checked instead.
#include <thread>

#include "engine/dist/communicator.h"
#include "engine/dist/store.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kiln::testing {
namespace {

// Two emulated devices on the kernel emulation: one rank per device, on threads.
[[maybe_unused]] const int kTwoEmulatedDevices = UseEmulatedDevices(2);

using dist::ReduceOp;

TEST_CASE("without a device the nccl backend is refused with the reason", "[nccl]") {
  if (NoGpuReason().empty()) KILN_SKIP("a CUDA device is present");
  dist::InProcessStore store;
  auto comm = dist::MakeCommunicator("nccl", &store, 0, 1, {});
  REQUIRE_FALSE(comm.ok());
  REQUIRE_THAT(std::string(comm.status().message()), Catch::Contains("no CUDA device available: "));
}

Tensor Cuda(const std::vector<float>& v, DType dtype = DType::kF32) {
  return ToCuda(Tensor::FromFloats(v, {static_cast<int64_t>(v.size())}, dtype));
}

TEST_CASE("nccl collectives on one GPU (world 1)", "[gpu][nccl]") {
  KILN_REQUIRE_GPU();
  dist::InProcessStore store;
  auto comm = dist::MakeCommunicator("nccl", &store, 0, 1, {});
  INFO(comm.status());
  REQUIRE(comm.ok());
  const Tensor t = Cuda({1, 2, 3, 4});
  REQUIRE((*comm)->AllReduce(t, ReduceOp::kSum)->Wait().ok());
  REQUIRE(t.ToFloats() == std::vector<float>{1, 2, 3, 4});
  REQUIRE((*comm)->AllReduce(t, ReduceOp::kAvg)->Wait().ok());
  REQUIRE(t.ToFloats() == std::vector<float>{1, 2, 3, 4});
  const Tensor out = Cuda({0, 0, 0, 0});
  REQUIRE((*comm)->ReduceScatter(t, out, ReduceOp::kSum)->Wait().ok());
  REQUIRE(out.ToFloats() == t.ToFloats());
  const Tensor gathered = Cuda({0, 0, 0, 0}, DType::kBF16);
  REQUIRE((*comm)->AllGather(Cuda({5, 6, 7, 8}, DType::kBF16), gathered)->Wait().ok());
  REQUIRE(gathered.ToFloats() == std::vector<float>{5, 6, 7, 8});
  REQUIRE((*comm)->Broadcast(t, 0)->Wait().ok());
  REQUIRE((*comm)->AllToAll(t, out)->Wait().ok());
  REQUIRE((*comm)->Barrier()->Wait().ok());
  // CPU tensors are refused by a CUDA backend, with the reason.
  const absl::Status cpu = (*comm)->AllReduce(Tensor::FromFloats({1}, {1}), ReduceOp::kSum)->Wait();
  REQUIRE(cpu.code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("nccl collectives with one rank per GPU", "[gpu][nccl]") {
  KILN_REQUIRE_GPU();
  const int world = RuntimeFor(Device::CUDA(0)).DeviceCount();
  if (world < 2) KILN_SKIP("one GPU: multi-rank NCCL needs at least two");
  dist::InProcessStore store;
  std::vector<std::vector<float>> sums(world);
  std::vector<absl::Status> status(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      dist::CommunicatorOptions o;
      o.cuda_device = r;
      auto comm = dist::MakeCommunicator("nccl", &store, r, world, o);
      if (!comm.ok()) {
        status[r] = comm.status();
        return;
      }
      // On the rank's own device: NCCL on GPU r cannot reduce a buffer on GPU 0.
      const Tensor t = Tensor::Zeros({2}, DType::kF32, Device::CUDA(r));
      t.CopyFrom(Tensor::FromFloats({float(r), float(2 * r)}, {2}));
      status[r] = (*comm)->AllReduce(t, ReduceOp::kSum)->Wait();
      sums[r] = t.ToFloats();
    });
  }
  for (auto& t : threads) t.join();
  const float expect = world * (world - 1) / 2.0f;
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r << ": " << status[r]);
    REQUIRE(status[r].ok());
    REQUIRE(sums[r] == std::vector<float>{expect, 2 * expect});
  }
}

}  // namespace
}  // namespace kiln::testing
