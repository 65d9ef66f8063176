// The vector type of the instruction set this translation unit is compiled for. Kernel bodies
// include this header and are written once against `Vec`; Bazel compiles them once per ISA with
// -DKILN_ISA_AVX512, -DKILN_ISA_AVX2 or -DKILN_ISA_SCALAR (see kernels/cpu/BUILD.bazel), and
// KILN_ISA_NS names the namespace each compilation lands in. See Note [One body, three ISAs].
#pragma once

// Note [One body, three ISAs]
// Each kernel body (eltwise.cc, norm.cc, attention_*.cc, ...) is compiled three times with
// different target flags into kiln::kernels::cpu::{avx512, avx2, scalar}. Code in those namespaces
// only ever runs after ActiveCpuIsa() said the CPU supports it (isa_api.h picks the table). To
// keep AVX-512 instructions from leaking into code that runs on any CPU, these translation units
// take plain pointers and sizes (the *Args structs in isa_api.h), never Tensor or std containers:
// an inline function that the linker could fold across translation units (COMDAT) would otherwise
// be emitted with AVX-512 instructions and might be the copy the whole program ends up calling.

#include <cstdint>
#include <type_traits>

#include "engine/core/half.h"
#include "kernels/cpu/vec/vec_inline.h"

#if defined(KILN_ISA_AVX512)
#include "kernels/cpu/vec/vec_avx512.h"
#define KILN_ISA_NS avx512
#elif defined(KILN_ISA_AVX2)
#include "kernels/cpu/vec/vec_avx2.h"
#define KILN_ISA_NS avx2
#elif defined(KILN_ISA_SCALAR)
#include "kernels/cpu/vec/vec_scalar.h"
#define KILN_ISA_NS scalar
#else
#error "kernels/cpu/vec/vec.h is only for the per-ISA kernel bodies (define KILN_ISA_*)"
#endif

namespace kiln::kernels::cpu::KILN_ISA_NS {

// Loads n <= kWidth elements (the rest of the lanes are zero); n == kWidth is a full load.
template <typename T>
KILN_VEC_INLINE Vec LoadN(const T* p, int n) {
  return n == Vec::kWidth ? Vec::Load(p) : Vec::LoadPartial(p, n);
}

// Stores the first n <= kWidth lanes.
template <typename T>
KILN_VEC_INLINE void StoreN(Vec v, T* p, int n) {
  if (n == Vec::kWidth) {
    v.Store(p);
  } else {
    v.StorePartial(p, n);
  }
}

// Rounds every lane to the storage type T and back (identity for float): the value a kernel
// would read back after storing it as T.
template <typename T>
KILN_VEC_INLINE Vec RoundTo(Vec v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    T buf[Vec::kWidth];
    v.Store(buf);
    return Vec::Load(buf);
  }
}

// Starts loading the cache line at p into L1. Row-wise kernels call it on the next row while they
// write the current one: hardware prefetchers stop at 4 KiB page boundaries, so each new row of
// a few KiB would otherwise begin with a stall. Prefetches never fault, even past the end.
KILN_VEC_INLINE void Prefetch(const void* p) { __builtin_prefetch(p, /*rw=*/0, /*locality=*/3); }
// The same into L2 only, for rows too large to share L1 with the current one.
KILN_VEC_INLINE void PrefetchL2(const void* p) { __builtin_prefetch(p, /*rw=*/0, /*locality=*/2); }
// Fetches a line about to be written (ownership requested early, into L2).
KILN_VEC_INLINE void PrefetchForWrite(void* p) { __builtin_prefetch(p, /*rw=*/1, /*locality=*/2); }

// Calls fn(i, n) for the vectors covering [begin, end): n == kWidth for full vectors, then one
// call with the remainder. Four full vectors per iteration give the out-of-order core independent
// work; fn must be inlinable (a lambda).
template <typename Fn>
KILN_VEC_INLINE void ForEachVector(int64_t begin, int64_t end, Fn&& fn) {
  constexpr int kW = Vec::kWidth;
  int64_t i = begin;
  for (; i + 4 * kW <= end; i += 4 * kW) {
    fn(i, kW);
    fn(i + kW, kW);
    fn(i + 2 * kW, kW);
    fn(i + 3 * kW, kW);
  }
  for (; i + kW <= end; i += kW) fn(i, kW);
  if (i < end) fn(i, static_cast<int>(end - i));
}

// The f32 sum over [begin, end) of term(i, w), a Vec whose lanes past w are ignored (so term may
// compute anything there). Four accumulators in a fixed order: the result depends only on the
// range, never on how callers split work among threads.
template <typename Fn>
KILN_VEC_INLINE float ReduceSum(int64_t begin, int64_t end, Fn&& term) {
  constexpr int kW = Vec::kWidth;
  Vec acc0 = Vec::Zero(), acc1 = Vec::Zero(), acc2 = Vec::Zero(), acc3 = Vec::Zero();
  int64_t i = begin;
  for (; i + 4 * kW <= end; i += 4 * kW) {
    acc0 = acc0 + term(i, kW);
    acc1 = acc1 + term(i + kW, kW);
    acc2 = acc2 + term(i + 2 * kW, kW);
    acc3 = acc3 + term(i + 3 * kW, kW);
  }
  for (; i + kW <= end; i += kW) acc0 = acc0 + term(i, kW);
  if (i < end) {
    const int w = static_cast<int>(end - i);
    acc1 = acc1 + Vec::FirstLanes(term(i, w), w, Vec::Zero());
  }
  return ReduceAdd((acc0 + acc1) + (acc2 + acc3));
}

// The maximum over [begin, end) of term(i, w) (lanes past w ignored); -inf for an empty range.
template <typename Fn>
KILN_VEC_INLINE float ReduceMaxOver(int64_t begin, int64_t end, Fn&& term) {
  constexpr int kW = Vec::kWidth;
  const Vec neg_inf = Vec::Broadcast(-__builtin_inff());
  Vec acc0 = neg_inf, acc1 = neg_inf;
  int64_t i = begin;
  for (; i + 2 * kW <= end; i += 2 * kW) {
    acc0 = Max(acc0, term(i, kW));
    acc1 = Max(acc1, term(i + kW, kW));
  }
  for (; i + kW <= end; i += kW) acc0 = Max(acc0, term(i, kW));
  if (i < end) {
    const int w = static_cast<int>(end - i);
    acc1 = Max(acc1, Vec::FirstLanes(term(i, w), w, neg_inf));
  }
  return ReduceMax(Max(acc0, acc1));
}

}  // namespace kiln::kernels::cpu::KILN_ISA_NS
