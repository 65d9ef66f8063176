// This ISA's table of kernel entry points (compiled once per ISA, like the bodies it lists).
#include "kernels/cpu/isa_impl.h"

namespace kiln::kernels::cpu::KILN_ISA_NS {

// Constant-initialized (only function addresses), so registrations may use it at static init.
extern const IsaKernels kIsaKernels = {
    /*unary=*/&Unary,
    /*binary=*/&Binary,
    /*swiglu=*/&Swiglu,
    /*swiglu_backward=*/&SwigluBackward,
    /*fill=*/&Fill,
    /*dropout=*/&Dropout,
    /*sum=*/&Sum,
    /*sum_to=*/&SumTo,
    /*norm=*/&Norm,
    /*norm_backward=*/&NormBackward,
    /*rope=*/&Rope,
    /*attention=*/&AttentionForward,
    /*attention_backward=*/&AttentionBackward,
    /*cross_entropy=*/&CrossEntropy,
    /*embedding_backward=*/&EmbeddingBackward,
};

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
