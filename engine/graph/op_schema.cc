// The op registry.
#include "engine/graph/op_schema.h"

#include "engine/core/status.h"

namespace kiln::graph {

OpRegistry& OpRegistry::Global() {
  static OpRegistry* registry = new OpRegistry();
  return *registry;
}

void OpRegistry::Register(OpSchema schema) {
  KILN_CHECK(Find(schema.name) == nullptr) << "op registered twice: " << schema.name;
  KILN_CHECK(static_cast<bool>(schema.infer)) << "op " << schema.name << " has no infer function";
  schemas_.push_back(std::make_unique<OpSchema>(std::move(schema)));
}

const OpSchema* OpRegistry::Find(std::string_view name) const {
  for (const auto& s : schemas_) {
    if (s->name == name) return s.get();
  }
  return nullptr;
}

std::vector<std::string> OpRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& s : schemas_) names.push_back(s->name);
  return names;
}

}  // namespace kiln::graph
