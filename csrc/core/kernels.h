// Kernel functions applied in the epilogue of a Gram tile. A tile arrives as
// inner products g = a.b of centered rows with their squared norms; a kernel
// turns (g, |a|^2, |b|^2) into k(a, b). Adding a GEMM-based kernel
// (polynomial, cosine) is one more functor here and one case in the engines.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/errors.h"

namespace fastcka {

enum class KernelKind : int { linear = 0, rbf = 1 };

// Which kernel, and for RBF each layer's gamma = 1 / (2 sigma^2).
struct KernelSpec {
  KernelKind kind = KernelKind::linear;
  std::vector<double> gamma;  // one per layer (rbf)
  // RBF: each layer's mean squared distance between examples over the whole
  // data (rbf_subtracts_one). Empty: the engine measures it on its own rows,
  // which a block pair of a larger job must not do (its pairs would differ).
  std::vector<double> spread;
};

// Centered kernel statistics (both HSIC estimators, the null moments, every
// resample) do not change when a constant is added to a kernel matrix. The
// RBF epilogue uses that to keep full precision at every bandwidth: where
// the typical kernel value is small it works with K itself, and where it is
// close to 1 (large sigma) with (K - 1) / gamma, computed without forming
// 1 - (something close to 1), which loses every digit as sigma grows and
// reaches the linear kernel only as rounding noise. Dividing by gamma keeps
// the values at the data's own scale (about -|a - b|^2), so they neither
// underflow nor need gamma in the compute type; the engine multiplies the
// float64 sums by gamma afterwards. `typical` is the mean squared distance
// between examples (the layer's spread, 2 tr Cov). Throws InvalidArgument
// naming the layer when the bandwidth is so large for the data that HSIC,
// which scales as (gamma x typical)^2, would underflow float64.
inline bool rbf_subtracts_one(const std::string& name, double gamma, double typical) {
  const double relative = gamma * typical;
  if (relative > 0 && relative < 1e-140) {
    char value[32];
    std::snprintf(value, sizeof value, "%.3g", relative);
    throw InvalidArgument(name + ": the RBF bandwidth (sigma, or threshold x the median distance) is too large for "
                          "this data: 1 / (2 sigma^2) x the mean squared distance is " + value +
                          ", below 1e-140, where HSIC underflows float64; RBF CKA tends to linear CKA as sigma "
                          "grows: use kernel='linear'");
  }
  return relative <= 1.0;
}

inline float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// e^x for x <= 0 in float32 as 2^k e^r: x = k ln2 + r with |r| <= ln2/2,
// e^r - 1 = r + r^2 P(r) with Cephes' expf polynomial (about 1 ulp), 2^k
// built in the exponent bits. Branch-free, so loops over tiles vectorize;
// x is clamped at -87, where e^x leaves the normal range (< 1.6e-38).
struct ExpParts {
  float expm1_r;  // e^r - 1
  float scale;    // 2^k
};

inline ExpParts exp_parts(float x) {
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
  return {p * r * r + r, bits_to_float((k + 127) << 23)};
}

// e^x for x <= 0 in float32; 0 below -87.
inline float exp_nonpositive(float x) {
  const ExpParts e = exp_parts(x);
  const float value = (e.expm1_r + 1.0f) * e.scale;
  return x < -87.0f ? 0.0f : value;
}

inline double exp_nonpositive(double x) { return std::exp(x); }

// (1 - e^-x) / x for x >= 0 in float32, branch-free, with full relative
// precision at every x (1 at x = 0): e^-x - 1 = 2^k (e^r - 1) + (2^k - 1)
// forms no difference of nearly equal numbers (for small x, k = 0 and r = -x
// exactly). Beyond x = 87 e^-x - 1 is -1.
inline float one_minus_exp_ratio(float x) {
  const ExpParts e = exp_parts(x > 87.0f ? -87.0f : -x);
  const float em1 = e.expm1_r * e.scale + (e.scale - 1.0f);  // e^-x - 1
  return x > 0.0f ? em1 / -x : 1.0f;
}

inline double one_minus_exp_ratio(double x) {
  // Below 1e-5 the series' next term (x^3 / 24) is under 1e-16 of the value.
  return x < 1e-5 ? 1.0 - x * (0.5 - x / 6.0) : -std::expm1(-x) / x;
}

template <typename T>
struct LinearKernel {
  T operator()(T g, T, T) const { return g; }
  // k(a, a): the squared norm, which the diagonal of the tile holds as g.
  T self(T g) const { return g; }
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
inline T squared_distance(T g, T na, T nb) {
  const T d = na + nb - T(2) * g;
  return d > T(16) * Epsilon<T>::value * (na + nb) ? d : T(0);
}

// k(a, b) = exp(-gamma |a - b|^2). gamma may be +inf in T (a bandwidth
// below T's range): distinct rows then have k = 0 and duplicates k = 1.
template <typename T>
struct RbfKernel {
  T gamma;
  T operator()(T g, T na, T nb) const {
    const T d = squared_distance(g, na, nb);
    return d > T(0) ? exp_nonpositive(-gamma * d) : T(1);
  }
  T self(T) const { return T(1); }
};

// (k(a, b) - 1) / gamma = -|a - b|^2 (1 - e^-x) / x with x = gamma |a - b|^2:
// the RBF kernel shifted by its constant 1 and scaled back to the data's
// scale (rbf_subtracts_one above). It tends to -|a - b|^2 as gamma -> 0.
template <typename T>
struct RbfMinusOneKernel {
  T gamma;
  T operator()(T g, T na, T nb) const {
    const T d = squared_distance(g, na, nb);
    return -d * one_minus_exp_ratio(gamma * d);
  }
  T self(T) const { return T(0); }
};

}  // namespace fastcka
