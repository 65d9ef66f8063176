// The entry points every per-ISA kernel library defines (in kiln::kernels::cpu::KILN_ISA_NS), and
// which isa_table.cc collects into that ISA's IsaKernels. Only for the per-ISA translation units.
#pragma once

#include "engine/core/status.h"
#include "kernels/cpu/isa_api.h"
#include "kernels/cpu/vec/vec.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {

// eltwise.cc
void Unary(const UnaryArgs& args);
void Binary(const BinaryArgs& args);
void Swiglu(const SwigluArgs& args);
void SwigluBackward(const SwigluArgs& args);
void Fill(const FillArgs& args);
void Dropout(const DropoutArgs& args);
// reduce.cc
void Sum(const SumArgs& args);
void SumTo(const SumToArgs& args);
// norm.cc
void Norm(const NormArgs& args);
void NormBackward(const NormBackwardArgs& args);
// rope.cc
void Rope(const RopeArgs& args);
// attention_forward.cc, attention_backward.cc
void AttentionForward(const AttentionArgs& args);
void AttentionBackward(const AttentionArgs& args);
// loss.cc
void CrossEntropy(const CrossEntropyArgs& args);
void EmbeddingBackward(const EmbeddingBackwardArgs& args);

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
