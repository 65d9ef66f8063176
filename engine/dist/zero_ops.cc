// Schemas and kernels of the zero_* ops (zero_ops.h). The kernels run on the host for either
// device: they hand bound tensors to the ZeroRuntime, which orders its work on the device's
// stream (Note [ZeRO on a GPU] in zero_runtime.h).
#include "engine/dist/zero_ops.h"

#include "absl/strings/str_cat.h"
#include "engine/core/kernel.h"
#include "engine/dist/zero_runtime.h"
#include "engine/graph/op_schema.h"

namespace kiln::dist {
namespace {

using graph::TensorType;
using Types = std::vector<TensorType>;

absl::StatusOr<Types> InferReduceGrads(const Types& in, const std::any& attrs) {
  const auto& a = std::any_cast<const ZeroOpAttrs&>(attrs);
  for (const TensorType& t : in) {
    if (t.dtype != a.dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradient ", t.ToString(), " is not ", std::string(DTypeName(a.dtype))));
    }
  }
  return Types{};
}

absl::StatusOr<Types> InferGatherStart(const Types&, const std::any& attrs) {
  const auto& a = std::any_cast<const ZeroOpAttrs&>(attrs);
  return Types{{{a.length}, a.dtype}};
}

absl::StatusOr<Types> InferGatherWait(const Types& in, const std::any&) { return in; }

struct Registration {
  Registration() {
    auto& r = graph::OpRegistry::Global();
    graph::OpSchema reduce;
    reduce.name = "zero_reduce_grads";
    reduce.input_names = {"grad"};
    reduce.variadic = true;
    reduce.num_outputs = 0;
    reduce.has_side_effects = true;
    reduce.host_work = true;
    reduce.infer = InferReduceGrads;
    r.Register(reduce);
    graph::OpSchema start;
    start.name = "zero_gather_start";
    start.host_work = true;
    start.num_outputs = 1;
    start.infer = InferGatherStart;
    r.Register(start);
    graph::OpSchema wait;
    wait.name = "zero_gather_wait";
    wait.host_work = true;
    wait.input_names = {"full"};
    wait.infer = InferGatherWait;
    wait.inplace_input = 0;
    r.Register(wait);
  }
} registration;

void RunReduceGrads(const KernelContext& ctx) {
  const auto& a = ctx.attrs_as<ZeroOpAttrs>();
  KILN_CHECK_EQ(static_cast<int>(a.members.size()), ctx.num_inputs);
  a.runtime->ReduceBucket(a.bucket, a.members, ctx.inputs);
}

void RunGatherStart(const KernelContext& ctx) {
  const auto& a = ctx.attrs_as<ZeroOpAttrs>();
  a.runtime->GatherStart(a.gather_id, a.bucket, ctx.output(0));
}

void RunGatherWait(const KernelContext& ctx) {
  ctx.attrs_as<ZeroOpAttrs>().runtime->GatherWait(ctx.attrs_as<ZeroOpAttrs>().gather_id);
}

#define KILN_REGISTER_ZERO_KERNELS(device, dtype)                              \
  KILN_REGISTER_KERNEL_FN("zero_reduce_grads", device, dtype, RunReduceGrads); \
  KILN_REGISTER_KERNEL_FN("zero_gather_start", device, dtype, RunGatherStart); \
  KILN_REGISTER_KERNEL_FN("zero_gather_wait", device, dtype, RunGatherWait)

KILN_REGISTER_ZERO_KERNELS(kCPU, kF32);
KILN_REGISTER_ZERO_KERNELS(kCPU, kBF16);
KILN_REGISTER_ZERO_KERNELS(kCPU, kF16);
KILN_REGISTER_ZERO_KERNELS(kCUDA, kF32);
KILN_REGISTER_ZERO_KERNELS(kCUDA, kBF16);
KILN_REGISTER_ZERO_KERNELS(kCUDA, kF16);

}  // namespace
}  // namespace kiln::dist
