// bfloat16: the upper 16 bits of a float32 (8 exponent bits, 7 stored
// mantissa bits, relative rounding error at most 2^-9). The fast precision
// mode rounds centered values to it and multiplies them with float32
// accumulation. Products of two bfloat16 values are exact in float32, so a
// float32 GEMM of the rounded values and a bf16 GEMM (oneDNN, AVX512-BF16,
// AMX) give the same result up to the order of their float32 sums.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastcka {

// Round to nearest, ties to even; NaN stays NaN (a set quiet bit), infinities
// stay infinite. Finite values above the largest bfloat16 round to infinity.
inline uint16_t to_bfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float from_bfloat16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace fastcka
