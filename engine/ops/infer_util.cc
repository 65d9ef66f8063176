// Inference checks with argument-naming messages.
#include "engine/ops/infer_util.h"

#include "absl/strings/str_cat.h"

namespace kiln::ops {

graph::OpSchema MakeSchema(const std::string& name, std::vector<std::string> inputs,
                           int num_outputs, graph::InferFn infer, graph::GradFn grad) {
  graph::OpSchema s;
  s.name = name;
  s.input_names = std::move(inputs);
  s.num_outputs = num_outputs;
  s.infer = std::move(infer);
  s.grad = std::move(grad);
  return s;
}

absl::Status RequireFloating(const TensorType& t, const std::string& arg) {
  if (IsFloating(t.dtype)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("argument ", arg, " is ", t.ToString(),
                                                 ": expected a floating dtype (f32, bf16, f16)"));
}

absl::Status RequireDType(const TensorType& t, DType dtype, const std::string& arg) {
  if (t.dtype == dtype) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "argument ", arg, " is ", t.ToString(), ": expected dtype ", std::string(DTypeName(dtype))));
}

absl::Status RequireRankAtLeast(const TensorType& t, int rank, const std::string& arg) {
  if (t.rank() >= rank) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("argument ", arg, " has shape ",
                                                 ShapeToString(t.shape), ": expected at least ",
                                                 rank, " dimensions"));
}

absl::Status RequireRank(const TensorType& t, int rank, const std::string& arg) {
  if (t.rank() == rank) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "argument ", arg, " has shape ", ShapeToString(t.shape), ": expected ", rank, " dimensions"));
}

absl::Status RequireSameShape(const TensorType& t, const std::string& arg, const TensorType& ref,
                              const std::string& ref_arg, bool check_dtype) {
  if (t.shape != ref.shape) {
    return absl::InvalidArgumentError(absl::StrCat("argument ", arg, " has shape ",
                                                   ShapeToString(t.shape), " but ", ref_arg,
                                                   " has ", ShapeToString(ref.shape)));
  }
  if (check_dtype && t.dtype != ref.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("argument ", arg, " is ", t.ToString(), " but ",
                                                   ref_arg, " is ", ref.ToString(),
                                                   ": dtypes must match"));
  }
  return absl::OkStatus();
}

absl::Status RequireLastDim(const TensorType& t, int64_t size, const std::string& arg,
                            const std::string& why) {
  if (t.rank() >= 1 && t.shape.back() == size) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("argument ", arg, " has shape ", ShapeToString(t.shape),
                   ": last dimension must be ", size, " (", why, ")"));
}

}  // namespace kiln::ops
