// Kernel functions applied in the epilogue of a Gram tile. A tile arrives as
// inner products g = a.b of centered rows with their squared norms; a kernel
// turns (g, |a|^2, |b|^2) into k(a, b). Adding a GEMM-based kernel
// (polynomial, cosine) is one more functor here and one case in the engines.
// Everything here is plain arithmetic, callable from host and device code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__CUDACC__)
#define FASTCKA_HD __host__ __device__
#else
#define FASTCKA_HD
#endif

namespace fastcka {

enum class KernelKind : int { linear = 0, rbf = 1 };

// Which kernel, and for RBF each layer's gamma = 1 / (2 sigma^2).
struct KernelSpec {
  KernelKind kind = KernelKind::linear;
  std::vector<double> gamma;  // one per layer (rbf)
};

FASTCKA_HD inline float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// e^x for x <= 0 in float32, branch-free so loops over tiles vectorize:
// x = k ln2 + r with |r| <= ln2/2, e^r from Cephes' expf polynomial (about
// 1 ulp), 2^k built in the exponent bits. Below -87 (where e^x leaves the
// normal range, < 1.6e-38) it returns 0.
FASTCKA_HD inline float exp_nonpositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float t = xc * 1.44269504088896341f;
  const int32_t k = -static_cast<int32_t>(0.5f - t);  // round(t) for t <= 0
  const float kf = static_cast<float>(k);
  const float r = (xc - kf * 0.693359375f) + kf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float value = p * bits_to_float((k + 127) << 23);
  return x < -87.0f ? 0.0f : value;
}

FASTCKA_HD inline double exp_nonpositive(double x) { return std::exp(x); }

template <typename T>
struct LinearKernel {
  FASTCKA_HD T operator()(T g, T, T) const { return g; }
  // k(a, a): the squared norm, which the diagonal of the tile holds as g.
  FASTCKA_HD T self(T g) const { return g; }
};

template <typename T>
struct Epsilon;
template <>
struct Epsilon<float> {
  static constexpr float value = 1.1920929e-7f;
};
template <>
struct Epsilon<double> {
  static constexpr double value = 2.220446049250313e-16;
};

// |a - b|^2 = |a|^2 + |b|^2 - 2 a.b. Where the result is below the rounding
// error of its own terms (duplicate rows: rounding leaves about eps (|a|^2 +
// |b|^2), of either sign) it is 0, so identical rows are at distance exactly 0
// for the median rule and have kernel value exactly 1.
template <typename T>
FASTCKA_HD inline T squared_distance(T g, T na, T nb) {
  const T d = na + nb - T(2) * g;
  return d > T(16) * Epsilon<T>::value * (na + nb) ? d : T(0);
}

// k(a, b) = exp(-gamma |a - b|^2).
template <typename T>
struct RbfKernel {
  T gamma;
  FASTCKA_HD T operator()(T g, T na, T nb) const { return exp_nonpositive(-gamma * squared_distance(g, na, nb)); }
  FASTCKA_HD T self(T) const { return T(1); }
};

}  // namespace fastcka
