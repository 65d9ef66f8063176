// StagedTensor on the fake CUDA device (tests/engine/core/fake_device.h) and on the CPU: values
// reach the device through page-locked host twins with asynchronous copies and one event per
// copy, the host buffer is handed out again only after a wait for that event, and results come
// back the same way (Note [Pinned staging]).
#include "engine/train/staged_tensor.h"

#include "tests/engine/core/fake_device.h"
#include "tests/testing.h"

namespace kiln::testing {
namespace {

TEST_CASE("staged uploads and downloads go through async copies and events", "[train]") {
  FakeRuntime* rt = InstallFakeCuda();
  const Tensor value = Tensor::Zeros({2, 3}, DType::kI32, Device::CUDA(0));
  const int copies = rt->copies, async = rt->async_copies;
  const int recorded = rt->events_recorded, waits = rt->event_waits;
  {
    train::StagedTensor staged(value);
    REQUIRE(staged.Host().device().is_cpu());
    REQUIRE(staged.Host().sizes() == value.sizes());
    REQUIRE(staged.Host().dtype() == DType::kI32);
    REQUIRE(rt->event_waits == waits);  // nothing in flight yet: no wait
    for (int i = 0; i < 6; ++i) staged.Host().data<int32_t>()[i] = 10 + i;
    staged.Upload();
    REQUIRE(rt->async_copies == async + 1);
    REQUIRE(rt->events_recorded == recorded + 1);
    // The next write into the twin first waits for the copy out of it, once.
    staged.Host().data<int32_t>()[0] = 99;
    REQUIRE(rt->event_waits == waits + 1);
    staged.Host();
    REQUIRE(rt->event_waits == waits + 1);
    REQUIRE(value.ToFloats() == std::vector<float>{10, 11, 12, 13, 14, 15});
    // Download: the device value comes back into the twin.
    staged.Download();
    REQUIRE(staged.Host().data<int32_t>()[0] == 10);
    REQUIRE(rt->event_waits == waits + 2);
    REQUIRE(rt->copies > copies);  // ToFloats above: the ordinary synchronous path
  }
}

TEST_CASE("a staged CPU value is a plain host twin", "[train]") {
  const Tensor value = Tensor::Zeros({4}, DType::kF32);
  train::StagedTensor staged(value);
  REQUIRE(staged.Host().raw_data() != value.raw_data());  // a copy, so downloads can be kept
  staged.Host().Fill(2.5f);
  staged.Upload();
  REQUIRE(value.ToFloats() == std::vector<float>(4, 2.5f));
  value.Fill(-1.0f);
  REQUIRE(staged.Host().ToFloats() == std::vector<float>(4, 2.5f));
  staged.Download();
  REQUIRE(staged.Host().ToFloats() == std::vector<float>(4, -1.0f));
}

}  // namespace
}  // namespace kiln::testing
