// Parameter table lookups.
#include "engine/nn/param_table.h"

namespace kiln::nn {

const ParamEntry* ParamTable::Find(const std::string& name) const {
  for (const ParamEntry& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

int64_t ParamTable::total_elements() const {
  int64_t n = 0;
  for (const ParamEntry& e : entries) n += e.numel();
  return n;
}

}  // namespace kiln::nn
