// [gpu] What binding an executor leaves on a device (Note [One arena at a time] in
// engine/graph/executor.cc): the provisional arena that sized the kernels' workspaces is freed
// before the final one is allocated and returned to the driver, so neither the allocator's peak
// nor its reserved memory carries a second arena.
#include "engine/graph/executor.h"
#include "engine/nn/model.h"
#include "kernels/cuda/cuda_context.h"
#include "tests/engine/graph/tiny_gpt2.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kiln::testing {
namespace {

TEST_CASE("binding on a device holds one arena, allocated and reserved", "[gpu][cuda]") {
  KILN_REQUIRE_GPU();
  kernels::cuda::CachingAllocator* cache = kernels::cuda::DeviceCachingAllocator(0);
  cache->EmptyCache();
  cache->ResetPeak();
  const kernels::cuda::CachingAllocatorStats before = cache->Stats();
  nn::GraphOptions go;
  go.batch = 8;
  go.seq_len = 256;
  go.compute = DType::kBF16;
  auto model = nn::BuildModel(TinyGpt2Config(2, 256, 4096, 256), go);  // (8, 256, 4096) logits
  REQUIRE(model.ok());
  graph::ExecutorOptions eo;
  eo.device = Device::CUDA(0);
  auto exec = graph::Executor::Create(model->graph, eo);
  REQUIRE(exec.ok());
  const kernels::cuda::CachingAllocatorStats after = cache->Stats();
  const int64_t arena = static_cast<int64_t>((*exec)->memory_plan().arena_bytes);
  const int64_t held = after.allocated_bytes - before.allocated_bytes;
  const int64_t reserved = after.reserved_bytes - before.reserved_bytes;
  const int64_t peak = after.peak_allocated_bytes - before.allocated_bytes;
  INFO("arena " << arena << ", held " << held << ", peak " << peak << ", reserved " << reserved);
  REQUIRE(arena > (int64_t{32} << 20));  // large enough that a second arena cannot hide in slack
  REQUIRE(held >= arena);
  REQUIRE(peak - held < arena / 2);      // the provisional arena was freed first
  REQUIRE(reserved - held < arena / 2);  // and not kept in the cache
}

}  // namespace
}  // namespace kiln::testing
