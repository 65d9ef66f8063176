// nvcuda::wmma on the kernel emulation (Note [Kernel emulation] in cuda_emulation.h): the subset
// attention_tc.cu uses (16x16x16 fragments of bf16 / f16 with f32 accumulators; fill, load, store,
// mma). Every lane holds the whole tile, row-major, which is correct for the lane-uniform use the
// API allows (a fragment's element mapping is opaque). Stores are split across the lanes (lane l
// writes elements l, l + 32, ...) as they are on a device, so a lane that reads another lane's
// part before a __syncwarp reads stale memory; loads and mma_sync are done once per warp (Note
// [Warp-uniform work] in emulator.cc), with a check that every lane passed the same operands.
// Pointers must be 32-byte aligned and leading dimensions a multiple of 16 bytes, as the CUDA
// programming guide requires; anything else fails the launch.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/emulation/cuda_emulation.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = kRows * kCols;
  T x[num_elements];  // (kRows, kCols) row-major, the whole tile
};

namespace emulated {

inline float ToFloat(float v) { return v; }
inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float ToFloat(__half v) { return __half2float(v); }

template <typename T>
void CheckOperand(const T* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    ::kiln::kernels::cuda::emulation::Fail(std::string(what) + ": pointer not 256-bit aligned");
  }
  if (ldm * sizeof(T) % 16 != 0) {
    ::kiln::kernels::cuda::emulation::Fail(std::string(what) + ": ldm " + std::to_string(ldm) +
                                           " is not a multiple of 16 bytes");
  }
}

}  // namespace emulated

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float value) {
  for (T& v : f.x) v = static_cast<T>(value);
}

namespace emulated {

// A warp-collective load: the lanes of a converged warp load at one instant on a device, so the
// first lane to reach the load reads memory and the others take its fragment from the warp's memo
// (after checking that they asked for the same address and ldm), not from memory that a lane
// already past the load — and past the mma_sync that needs every lane's fragment — may have
// stored to since.
template <typename Fragment, typename Read>
void WarpLoad(Fragment& f, const void* p, unsigned ldm, Read&& read) {
  static_assert(sizeof(f.x) % sizeof(float) == 0, "a fragment fills whole floats");
  constexpr size_t kKey = 4;  // floats holding the address and ldm (two uint64_t)
  constexpr size_t kFragmentBytes = sizeof(f.x);
  constexpr size_t kSize = kKey + kFragmentBytes / sizeof(float);
  const uint64_t key[2] = {reinterpret_cast<uintptr_t>(p), ldm};
  bool fresh = false;
  std::vector<float>& memo = ::kiln::kernels::cuda::emulation::WarpMemo(&fresh);
  if (fresh) {
    read(f);
    memo.resize(kSize);
    std::memcpy(memo.data(), key, sizeof(key));
    std::memcpy(memo.data() + kKey, f.x, sizeof(f.x));
    return;
  }
  if (memo.size() != kSize || std::memcmp(memo.data(), key, sizeof(key)) != 0) {
    ::kiln::kernels::cuda::emulation::Fail(
        "wmma::load_matrix_sync: address or ldm differ across the lanes of a warp");
  }
  std::memcpy(static_cast<void*>(f.x), memo.data() + kKey, sizeof(f.x));
}

}  // namespace emulated

// matrix_a / matrix_b from memory in the fragment's layout.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulators take a layout_t");
  using F = fragment<Use, M, N, K, T, Layout>;
  emulated::CheckOperand(p, ldm, "wmma::load_matrix_sync");
  emulated::WarpLoad(f, p, ldm, [&](F& out) {
    for (int r = 0; r < F::kRows; ++r) {
      for (int c = 0; c < F::kCols; ++c) {
        out.x[r * F::kCols + c] =
            std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
      }
    }
  });
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  emulated::CheckOperand(p, ldm, "wmma::load_matrix_sync (accumulator)");
  emulated::WarpLoad(f, p, ldm, [&](F& out) {
    for (int r = 0; r < M; ++r) {
      for (int c = 0; c < N; ++c) {
        out.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
      }
    }
  });
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  emulated::CheckOperand(p, ldm, "wmma::store_matrix_sync");
  const int lane = ::kiln::kernels::cuda::emulation::LaneId();
  for (int e = lane; e < M * N; e += 32) {
    const int r = e / N, c = e % N;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[e];
  }
}

// d = a b + c (d may be c): products of the storage-type inputs summed in f32. Computed once per
// warp (Note [Warp-uniform work] in emulator.cc); a lane whose operands differ from its warp's
// fails the launch.
template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  // memo: the raw operands a, b, c (compared bit for bit by later lanes), then d (M, N) f32
  constexpr size_t kOperandBytes = sizeof(a.x) + sizeof(b.x) + sizeof(c.x);
  static_assert(kOperandBytes % sizeof(float) == 0, "operands fill whole floats");
  constexpr size_t kD = kOperandBytes / sizeof(float);
  bool fresh = false;
  std::vector<float>& memo = ::kiln::kernels::cuda::emulation::WarpMemo(&fresh);
  if (fresh) {
    memo.resize(kD + M * N);
    char* raw = reinterpret_cast<char*>(memo.data());
    std::memcpy(raw, a.x, sizeof(a.x));
    std::memcpy(raw + sizeof(a.x), b.x, sizeof(b.x));
    std::memcpy(raw + sizeof(a.x) + sizeof(b.x), c.x, sizeof(c.x));
    float af[M * K], bf[K * N];
    for (int e = 0; e < M * K; ++e) af[e] = emulated::ToFloat(a.x[e]);
    for (int e = 0; e < K * N; ++e) bf[e] = emulated::ToFloat(b.x[e]);
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < N; ++j) {
        float sum = 0.0f;
        for (int k = 0; k < K; ++k) sum += af[i * K + k] * bf[k * N + j];
        memo[kD + i * N + j] = c.x[i * N + j] + sum;
      }
    }
  } else {
    const char* raw = reinterpret_cast<const char*>(memo.data());
    const char* differs = memo.size() != kD + M * N                               ? "memo"
                          : std::memcmp(raw, a.x, sizeof(a.x)) != 0               ? "a"
                          : std::memcmp(raw + sizeof(a.x), b.x, sizeof(b.x)) != 0 ? "b"
                          : std::memcmp(raw + sizeof(a.x) + sizeof(b.x), c.x, sizeof(c.x)) != 0
                              ? "c"
                              : nullptr;
    if (differs != nullptr) {
      std::string detail;
      if (differs[0] == 'c') {
        const float* mc = reinterpret_cast<const float*>(raw + sizeof(a.x) + sizeof(b.x));
        for (int e = 0; e < M * N; ++e) {
          if (std::memcmp(&mc[e], &c.x[e], 4) != 0) {
            detail = " (element " + std::to_string(e) + ": " + std::to_string(mc[e]) + " vs " +
                     std::to_string(c.x[e]) + ")";
            break;
          }
        }
      }
      ::kiln::kernels::cuda::emulation::Fail(
          std::string("wmma::mma_sync: operand ") + differs + detail +
          " differs across the lanes of a warp (not warp-uniform)");
    }
  }
  std::memcpy(d.x, memo.data() + kD, sizeof(d.x));
}

}  // namespace nvcuda::wmma
