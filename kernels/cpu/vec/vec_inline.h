// KILN_VEC_INLINE: forced inlining for the vector layer (Vec operations, loads and stores with
// conversion, the loop helpers and vec_math.h). GCC's -O2 size heuristics otherwise keep exp, the
// bf16 conversions and friends out of line, and a call per vector costs more than the work.
#pragma once

#define KILN_VEC_INLINE inline __attribute__((always_inline))
