// Graph-to-graph passes run between autodiff and memory planning. Each is a function of the graph;
// engine/graph/passes.cc says what each one guarantees.
#pragma once

#include "engine/graph/graph.h"

namespace kiln::graph {

// Removes nodes none of whose outputs reach a graph output or a gradient slot (nodes with side
// effects stay). Returns the number of nodes removed.
int EliminateDeadCode(Graph& graph);

// Folds add(matmul(a, b), bias) into matmul_bias(a, b, bias) (the bias is added by the matmul
// itself, saving a pass over the output) when the product is read only by that add, the bias is
// one row of the product's dtype (f32 or bf16) and exists before the matmul runs. Run after
// autodiff: the fused op has no gradient. Returns the number of fusions.
int FuseMatmulBias(Graph& graph);

// Folds the gelu around a linear layer into its matmul's epilogue (Note [GELU in the matmul
// epilogue], kernels/cuda/matmul.cc): gelu(matmul_bias(a, b, bias)) becomes matmul_bias_gelu(a, b,
// bias) -> (pre, y), and gelu_backward(matmul(a, b), pre) becomes matmul_dgelu(a, b, pre) when the
// product is read only there. f32 and bf16, linear layers only (a shared 2-D weight, no trans_a).
// Run after FuseMatmulBias. Returns the number of fusions.
int FuseMatmulGelu(Graph& graph);

// Folds the bias gradient of a gelu layer into the matmul that makes its input gradient:
// sum_to(matmul_dgelu(a, b, pre) -> [N]) becomes the second output of matmul_dgelu_bgrad(a, b,
// pre) -> (dpre, dbias), which cuBLASLt's DGELU_BGRAD epilogue computes from the accumulators
// (Note [Bias gradient in the matmul epilogue], kernels/cuda/matmul.cc) instead of a kernel that
// reads dpre again. Run after FuseMatmulGelu. Returns the number of fusions.
int FuseDGeluBiasGradient(Graph& graph);

// Folds a linear layer's bias gradient into its weight gradient: sum_to(dy -> [N]) and
// matmul(a, dy (rows, N), trans_a) — dy itself or its rows folded by a reshape — become
// matmul_bgrad(a, dy) -> (dW, dbias), which cuBLASLt's BGRADA epilogue computes while the GEMM
// reads dy (Note [Bias gradient in the matmul epilogue], kernels/cuda/matmul.cc). f32 and bf16.
// Run after FuseDGeluBiasGradient. Returns the number of fusions.
int FuseWeightBiasGradient(Graph& graph);

// Folds add(r, dx) — r any value that exists before the norm backward, dx output 0 of a
// layer_norm_backward / rms_norm_backward read only there — into layer_norm_backward_add /
// rms_norm_backward_add with r as its last input, which writes dx + r (Note [Residual gradient in
// the norm backward], engine/ops/norm.cc): the residual stream's gradient in a pre-norm
// transformer. Same bits as the unfused graph. Run after autodiff. Returns the number of fusions.
int FuseNormBackwardResidual(Graph& graph);

// Folds the loss seed into the loss gradient's pass: scale_by(dlogits, s) over cross_entropy's
// dlogits (read there alone) becomes cross_entropy_scaled(logits, targets, s), which writes
// dlogits * s[0] directly, saving a read and a write of the (rows, vocab) gradient — with GPT-2's
// vocabulary the largest activation of the step. s must exist before the loss runs (the seed is
// a graph input). Run after autodiff. Returns the number of fusions.
int FuseCrossEntropyScale(Graph& graph);

}  // namespace kiln::graph
