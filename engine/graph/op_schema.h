// OpSchema: what an op is, declared once in engine/ops — inputs, outputs, typed attributes, shape and
// dtype inference, the gradient builder, in-place and view behaviour, and which input's dtype picks
// the kernel. The registry maps names to schemas.
#pragma once

#include <any>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/graph/graph.h"

namespace kiln::graph {

class GradContext;

// Infers output types from input types and attributes. Errors name the argument and the shapes;
// the builder prefixes the op and node name.
using InferFn = std::function<absl::StatusOr<std::vector<TensorType>>(
    const std::vector<TensorType>& inputs, const std::any& attrs)>;

// Emits backward nodes; returns one gradient per input (kNoValue where none flows).
using GradFn = std::function<std::vector<ValueId>(GradContext& ctx)>;

struct OpSchema {
  std::string name;
  std::vector<std::string> input_names;  // also fixes the input count
  int num_outputs = 1;
  InferFn infer;
  GradFn grad;  // null: the op has no gradient (autodiff fails if one is needed through it)
  // Output `inplace_output` may reuse the buffer of input `inplace_input` when the node is that
  // input's last reader and the byte sizes match (-1: never). The kernel must tolerate the aliasing.
  int inplace_input = -1;
  int inplace_output = 0;
  // Output 0 is a view of input 0: no kernel runs and no memory is planned for it. It starts
  // view_offset(attrs) elements into input 0 (null: at its start) and is contiguous.
  bool is_view = false;
  std::function<int64_t(const std::any& attrs)> view_offset;
  // The node does something beyond its outputs (communication): dead-code elimination keeps it.
  bool has_side_effects = false;
  // The kernel does host-side work each run beyond enqueuing device work (talks to a communicator):
  // the executor never records it into a device graph but runs it between the recorded segments
  // (Note [Graph segments] in executor.cc).
  bool host_work = false;
  // Any number (>= 1) of inputs, all named input_names[0].
  bool variadic = false;
  // Which input's dtype selects the kernel (ops without inputs: output 0's dtype).
  int dispatch_input = 0;

  int num_inputs() const { return variadic ? -1 : static_cast<int>(input_names.size()); }
};

class OpRegistry {
 public:
  static OpRegistry& Global();
  void Register(OpSchema schema);
  const OpSchema* Find(std::string_view name) const;  // null when unknown
  std::vector<std::string> Names() const;

 private:
  std::vector<std::unique_ptr<OpSchema>> schemas_;
};

namespace internal {
struct OpRegistrar {
  explicit OpRegistrar(OpSchema schema) { OpRegistry::Global().Register(std::move(schema)); }
};
}  // namespace internal

}  // namespace kiln::graph

#define KILN_OP_UNIQUE_(line) kiln_op_registrar_##line
#define KILN_OP_UNIQUE(line) KILN_OP_UNIQUE_(line)
// KILN_REGISTER_OP(MakeLayerNormSchema());
#define KILN_REGISTER_OP(schema_expr) \
  static ::kiln::graph::internal::OpRegistrar KILN_OP_UNIQUE(__COUNTER__)(schema_expr)
