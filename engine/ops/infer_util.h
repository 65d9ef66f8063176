// Shared checks for op inference functions. Each returns an InvalidArgument Status whose message
// names the argument and the types involved; the graph builder prefixes the op and node name.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "engine/graph/graph.h"
#include "engine/graph/op_schema.h"

namespace kiln::ops {

using graph::TensorType;

// A schema with the common fields filled (the rest keep their defaults).
graph::OpSchema MakeSchema(const std::string& name, std::vector<std::string> inputs,
                           int num_outputs, graph::InferFn infer, graph::GradFn grad = nullptr);

absl::Status RequireFloating(const TensorType& t, const std::string& arg);
absl::Status RequireDType(const TensorType& t, DType dtype, const std::string& arg);
absl::Status RequireRankAtLeast(const TensorType& t, int rank, const std::string& arg);
absl::Status RequireRank(const TensorType& t, int rank, const std::string& arg);
// Same shape (and dtype when check_dtype) as the reference argument.
absl::Status RequireSameShape(const TensorType& t, const std::string& arg, const TensorType& ref,
                              const std::string& ref_arg, bool check_dtype = true);
// The last axis of `t` equals `size`.
absl::Status RequireLastDim(const TensorType& t, int64_t size, const std::string& arg,
                            const std::string& why);

}  // namespace kiln::ops
