// Graph-to-graph passes run between autodiff and memory planning. Each is a function of the graph;
// engine/graph/passes.cc says what each one guarantees.
#pragma once

#include "engine/graph/graph.h"

namespace kiln::graph {

// Removes nodes none of whose outputs reach a graph output or a gradient slot (nodes with side
// effects stay). Returns the number of nodes removed.
int EliminateDeadCode(Graph& graph);

}  // namespace kiln::graph
