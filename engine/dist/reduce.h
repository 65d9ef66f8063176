// Element-wise reduction kernels shared by every backend: out = a (op) b over raw buffers of one
// dtype, and the in-place division that turns a sum into an average. One implementation, so that
// Gloo's ring, our reduce-scatter ring and the in-process hub round the same way.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "engine/core/dtype.h"

namespace kiln::dist {

enum class ReduceOp { kSum, kAvg, kMax };

absl::string_view ReduceOpName(ReduceOp op);

// Dtypes that AllReduce / ReduceScatter accept (f32, bf16, f16, i32, i64). kAvg needs floating.
bool IsReducibleDType(DType dtype);

// Note [16-bit reduction]
// bf16 and f16 are reduced element by element in f32 and rounded back to the storage type once
// per call (round to nearest even). A collective therefore rounds once per partial sum it forms:
// world_size - 1 roundings for a sum, as NCCL does, and the wire carries 16-bit values. Max is
// exact. NaN propagates through max (either operand NaN gives NaN).

// out[i] = a[i] (op) b[i] for `n` elements of `dtype`; op is kSum or kMax (kAvg is a sum followed
// by DivideInPlace). `out` may alias `a` or `b`.
void ReduceArrays(DType dtype, ReduceOp op, void* out, const void* a, const void* b, size_t n);

// x[i] = x[i] / divisor, computed in f32 (f64 is not needed: divisor is a world size) and rounded
// back for 16-bit types. Floating dtypes only.
void DivideInPlace(DType dtype, void* x, size_t n, int divisor);

}  // namespace kiln::dist
