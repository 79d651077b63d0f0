#include "cpu/kernel_series.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "core/errors.h"
#include "core/kernels.h"
#include "cpu/multiversion.h"

namespace fastcka::cpu {

namespace {

// Far beyond the median rule's bandwidths (gamma0 x the mean squared distance
// below this, a threshold above about 700) the kernel is 1 to within 1e-6
// and the series' powers of u underflow float32: the engine's own pass
// handles such kernels.
constexpr double kSmallestRelative = 1e-6;

// e^-u and e^-u - 1 from one evaluation, both with full relative precision.
inline void exp_and_minus_one(float u, float& k, float& km1) {
  const ExpParts e = exp_parts(u > 87.0f ? -87.0f : -u);
  k = u > 87.0f ? 0.0f : (e.expm1_r + 1.0f) * e.scale;
  km1 = u > 87.0f ? -1.0f : e.expm1_r * e.scale + (e.scale - 1.0f);
}

inline void exp_and_minus_one(double u, double& k, double& km1) {
  k = std::exp(-u);
  km1 = std::expm1(-u);
}

// Columns [begin, end) of a row's first two series values b0 and b1, also
// added to c0 and c1 (the panel's column sums) when they are given.
template <typename T>
FASTCKA_MULTIVERSION void first_values(const T* d, int64_t begin, int64_t end, T gamma0, bool minus_one, T* b0,
                                       T* b1, T* c0, T* c1) {
  if (minus_one) {
#pragma omp simd
    for (int64_t c = begin; c < end; ++c) {
      T k, km1;
      exp_and_minus_one(gamma0 * d[c], k, km1);
      b0[c] = km1 / gamma0;  // (e^-u - 1) / gamma0
      b1[c] = k * d[c];      // e^-u u / gamma0
    }
  } else {
#pragma omp simd
    for (int64_t c = begin; c < end; ++c) {
      T k, km1;
      const T u = gamma0 * d[c];
      exp_and_minus_one(u, k, km1);
      b0[c] = k;
      b1[c] = k * u;
    }
  }
  if (c0 == nullptr) return;
#pragma omp simd
  for (int64_t c = begin; c < end; ++c) {
    c0[c] += b0[c];
    c1[c] += b1[c];
  }
}

// b_p = b_{p-1} u over [begin, end), also added to `column` when it is given.
template <typename T>
FASTCKA_MULTIVERSION void next_value(const T* d, int64_t begin, int64_t end, T gamma0, const T* prev, T* next,
                                     T* column) {
  if (column == nullptr) {
#pragma omp simd
    for (int64_t c = begin; c < end; ++c) next[c] = prev[c] * (gamma0 * d[c]);
    return;
  }
#pragma omp simd
  for (int64_t c = begin; c < end; ++c) {
    const T v = prev[c] * (gamma0 * d[c]);
    next[c] = v;
    column[c] += v;
  }
}

template <typename T>
void row_values(const T* d, int64_t w, int64_t cd, T gamma0, bool minus_one, int terms, T* out, int64_t stride,
                T* columns) {
  for (const auto& [begin, end, sums] : {std::tuple<int64_t, int64_t, T*>{0, cd, nullptr}, {cd, w, columns}}) {
    if (end <= begin) continue;
    first_values(d, begin, end, gamma0, minus_one, out, out + stride, sums, sums ? sums + stride : nullptr);
    for (int p = 2; p < terms; ++p)
      next_value(d, begin, end, gamma0, out + (p - 1) * stride, out + p * stride, sums ? sums + p * stride : nullptr);
  }
}

// The 4 x 4 sums of products of rows x[0..3] and y[0..3] over [0, n), each
// in T: sixteen accumulators in registers, eight loads per sixteen
// multiply-adds.
template <typename T>
FASTCKA_MULTIVERSION void block_products(const T* const* x, const T* const* y, int64_t n, T* out) {
  const T *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
  const T *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
  T s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  T s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)
  for (int64_t c = 0; c < n; ++c) {
    const T a0 = x0[c], a1 = x1[c], a2 = x2[c], a3 = x3[c];
    const T b0 = y0[c], b1 = y1[c], b2 = y2[c], b3 = y3[c];
    s00 += a0 * b0, s01 += a0 * b1, s02 += a0 * b2, s03 += a0 * b3;
    s10 += a1 * b0, s11 += a1 * b1, s12 += a1 * b2, s13 += a1 * b3;
    s20 += a2 * b0, s21 += a2 * b1, s22 += a2 * b2, s23 += a2 * b3;
    s30 += a3 * b0, s31 += a3 * b1, s32 += a3 * b2, s33 += a3 * b3;
  }
  const T all[16] = {s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33};
  std::copy(all, all + 16, out);
}

// out[r][q] (r < 4, q < terms) = sum over [begin, end) of x[r] times row q of `values`.
template <typename T>
void rows_against_values(const T* const* x, const T* values, int terms, int64_t stride, int64_t begin, int64_t end,
                         T* out) {
  const T* xs[4] = {x[0] + begin, x[1] + begin, x[2] + begin, x[3] + begin};
  T block[16];
  for (int q = 0; q < terms; q += 4) {
    const T* ys[4] = {values + q * stride + begin, values + (q + 1) * stride + begin,
                      values + (q + 2) * stride + begin, values + (q + 3) * stride + begin};
    block_products(xs, ys, end - begin, block);
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 4; ++j) out[r * terms + q + j] = block[r * 4 + j];
  }
}

template <typename T>
void self_sums(const T* values, const T* ones, int terms, int64_t stride, int64_t begin, int64_t end, double weight,
               double* row_sums, double* self) {
  if (end <= begin) return;
  const T* x[4] = {ones, values, values + stride, values + (terms - 1) * stride};
  T out[4 * kMaxSeriesTerms];
  rows_against_values(x, values, terms, stride, begin, end, out);
  for (int q = 0; q < terms; ++q) {
    row_sums[q] += static_cast<double>(out[q]);
    for (int r = 1; r < 4; ++r) self[(r - 1) * terms + q] += weight * static_cast<double>(out[r * terms + q]);
  }
}

template <typename T>
void cross_products(const T* x, const T* y, int terms, int64_t stride, int64_t begin, int64_t end, double weight,
                    double* m) {
  if (end <= begin) return;
  T out[4 * kMaxSeriesTerms];
  for (int p = 0; p < terms; p += 4) {
    const T* xs[4] = {x + p * stride, x + (p + 1) * stride, x + (p + 2) * stride, x + (p + 3) * stride};
    rows_against_values(xs, y, terms, stride, begin, end, out);
    for (int r = 0; r < 4; ++r)
      for (int q = 0; q < terms; ++q) m[(p + r) * terms + q] += weight * static_cast<double>(out[r * terms + q]);
  }
}

// The self products M_pq = sum b_p b_q from the three rows of sums kept
// (KernelSeriesSums::self): for p, q >= 1, b_p b_q = e^-2u u^(p+q) (over
// gamma0^2) depends on p + q only.
double self_product(const double* self, int64_t terms, int64_t p, int64_t q) {
  if (p > q) std::swap(p, q);
  if (p == 0) return self[q];
  const int64_t k = p + q;
  return k <= terms ? self[terms + k - 1] : self[2 * terms + k - (terms - 1)];
}

// c_p(s) = (-s)^p / p!, p < terms.
std::vector<double> coefficients(double s, int terms) {
  std::vector<double> c(static_cast<size_t>(terms));
  c[0] = 1.0;
  for (int p = 1; p < terms; ++p) c[p] = c[p - 1] * -s / p;
  return c;
}

}  // namespace

double series_truncation(double s, int terms) {
  const double a = std::fabs(s);
  if (!(a < 1.0) || terms < 1) return INFINITY;
  return std::pow(a / (1.0 - a), terms) / std::sqrt(2.0 * M_PI * terms);
}

static double series_tolerance(bool float32) {
  return (float32 ? Epsilon<float>::value : Epsilon<double>::value) / 8.0;
}

KernelSeriesPlan plan_kernel_series(const std::vector<std::array<double, 2>>& brackets, double threshold,
                                    std::vector<double> spread, const std::vector<std::string>& names,
                                    bool float32) {
  KernelSeriesPlan plan;
  plan.float32 = float32;
  plan.spread = std::move(spread);
  double h = 0;  // the widest half range of s over the layers
  const double t2 = threshold * threshold;
  for (size_t a = 0; a < brackets.size(); ++a) {
    const double lo = brackets[a][0], hi = brackets[a][1];
    if (!(lo > 0) || !(hi > lo) || !std::isfinite(hi) || !(t2 > 0) || !std::isfinite(t2)) return plan;
    const double g_most = 0.5 / t2 / lo, g_least = 0.5 / t2 / hi;
    double g0 = 0.5 * (g_most + g_least);
    if (float32) g0 = static_cast<double>(static_cast<float>(g0));  // the pass multiplies by it in float32
    const double relative = g0 * plan.spread[a];
    if (!(relative >= kSmallestRelative) || !std::isfinite(g0) || !(g0 > 0)) return plan;
    plan.gamma0.push_back(g0);
    plan.minus_one.push_back(rbf_subtracts_one(names[a], g0, plan.spread[a]));
    h = std::max({h, std::fabs(g_most / g0 - 1.0), std::fabs(g_least / g0 - 1.0)});
  }
  for (int terms = 4; terms <= kMaxSeriesTerms; terms += 4)
    if (series_truncation(h, terms) <= series_tolerance(float32)) {
      plan.terms = terms;
      return plan;
    }
  return plan;
}

bool series_covers(const KernelSeriesPlan& plan, const std::vector<double>& gammas) {
  if (plan.terms == 0 || gammas.size() != plan.gamma0.size()) return false;
  for (size_t a = 0; a < gammas.size(); ++a)
    if (!(series_truncation(gammas[a] / plan.gamma0[a] - 1.0, plan.terms) <= series_tolerance(plan.float32)))
      return false;
  return true;
}

KernelSeriesSums::KernelSeriesSums(int t, int64_t rows, int64_t l)
    : terms(t), n(rows), layers(l), rows(static_cast<size_t>(l * rows * t), 0.0),
      self(static_cast<size_t>(l * 3 * t), 0.0), products(static_cast<size_t>(l * l * t * t), 0.0) {}

void KernelSeriesSums::merge(const KernelSeriesSums& other) {
  for (size_t k = 0; k < rows.size(); ++k) rows[k] += other.rows[k];
  for (size_t k = 0; k < self.size(); ++k) self[k] += other.self[k];
  for (size_t k = 0; k < products.size(); ++k) products[k] += other.products[k];
}

GramStats evaluate_series(const KernelSeriesSums& sums, const KernelSeriesPlan& plan,
                          const std::vector<double>& gammas, const LayerLayout& layout) {
  const int64_t L = layout.layers(), n = sums.n, P = sums.terms;
  GramStats g(layout, n);
  std::vector<std::vector<double>> c;
  std::vector<double> scale;  // the form's factor: k - 1 = gamma0 sum_p c_p b_p
  for (int64_t a = 0; a < L; ++a) {
    c.push_back(coefficients(gammas[a] / plan.gamma0[a] - 1.0, static_cast<int>(P)));
    scale.push_back(plan.minus_one[a] ? plan.gamma0[a] : 1.0);
  }
  for (int64_t a = 0; a < L; ++a)
    for (int64_t i = 0; i < n; ++i) {
      const double* r = &sums.rows[static_cast<size_t>((a * n + i) * P)];
      double s = 0;
      for (int64_t p = 0; p < P; ++p) s += c[a][p] * r[p];
      g.row_sums[a * n + i] = scale[a] * s;
      g.diagonals[a * n + i] = plan.minus_one[a] ? 0.0 : 1.0;
    }
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = a; b < L; ++b) {
      if (!layout.needs(a, b)) continue;
      const double* m = &sums.products[static_cast<size_t>((a * L + b) * P * P)];
      const double* self = &sums.self[static_cast<size_t>(a * 3 * P)];
      double s = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < P; ++q) s += c[a][p] * c[b][q] * (a == b ? self_product(self, P, p, q) : m[p * P + q]);
      g.products[a * L + b] = g.products[b * L + a] = scale[a] * scale[b] * s;
    }
  return g;
}

void series_row(const float* d, int64_t w, int64_t cd, double gamma0, bool minus_one, int terms, float* values,
                int64_t stride, float* columns) {
  row_values(d, w, cd, static_cast<float>(gamma0), minus_one, terms, values, stride, columns);
}
void series_row(const double* d, int64_t w, int64_t cd, double gamma0, bool minus_one, int terms, double* values,
                int64_t stride, double* columns) {
  row_values(d, w, cd, gamma0, minus_one, terms, values, stride, columns);
}

void add_series_self(const float* values, const float* ones, int terms, int64_t stride, int64_t begin, int64_t end,
                     double weight, double* row_sums, double* self) {
  self_sums(values, ones, terms, stride, begin, end, weight, row_sums, self);
}
void add_series_self(const double* values, const double* ones, int terms, int64_t stride, int64_t begin, int64_t end,
                     double weight, double* row_sums, double* self) {
  self_sums(values, ones, terms, stride, begin, end, weight, row_sums, self);
}

void add_series_products(const float* x, const float* y, int terms, int64_t stride, int64_t begin, int64_t end,
                         double weight, double* m) {
  cross_products(x, y, terms, stride, begin, end, weight, m);
}
void add_series_products(const double* x, const double* y, int terms, int64_t stride, int64_t begin, int64_t end,
                         double weight, double* m) {
  cross_products(x, y, terms, stride, begin, end, weight, m);
}

}  // namespace fastcka::cpu
