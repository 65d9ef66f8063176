// Counter-based random numbers (Philox-4x32-10): the value at (seed, offset) is a pure function,
// so dropout can regenerate its mask in backward instead of storing it, and a resumed run continues
// the same stream from a saved offset.
#pragma once

#include <cstdint>

// Philox also runs in CUDA kernels (dropout): the same code, compiled for both sides by nvcc.
#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif

namespace kiln {

struct Philox {
  // Four independent 32-bit random words for counter `counter` under key `seed`.
  KILN_HOST_DEVICE static void Generate(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
    uint32_t c2 = 0, c3 = 0;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
  }
  // Uniform float in [0, 1) from a 32-bit word (24 bits of mantissa).
  KILN_HOST_DEVICE static float ToUniform(uint32_t x) {
    return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
  }
};

}  // namespace kiln
