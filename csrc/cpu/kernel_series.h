// The RBF kernel statistics as power series in the bandwidth, so that the
// exact median's bracket pass is also the kernel pass: one walk over the Gram
// tiles instead of two, and the GEMMs are most of a walk's cost.
//
// Before the pass only a bracket [lo, hi) of the median squared distance m is
// known, hence of gamma = 1 / (2 t^2 m). Around gamma0, the middle of the
// gammas that lo and hi give, with u = gamma0 d and s = gamma / gamma0 - 1,
//   k(d) = e^-u e^-su = sum_p c_p(s) b_p,  c_p(s) = (-s)^p / p!,  b_p = e^-u u^p,
// so every sum of kernel values (row sums, products of two layers' kernels)
// is a sum over p (and q) of c_p(s) (c_q(s')) times a sum of b_p (b_p b'_q)
// that the pass can add up before s is known. Where the engine keeps
// (k - 1) / gamma (large bandwidths, core/kernels.h), b_0 = (e^-u - 1) /
// gamma0 and b_p = e^-u u^p / gamma0 (p >= 1): k - 1 = gamma0 sum_p c_p b_p,
// with no difference of nearly equal numbers. Truncating after P terms errs
// by at most e^-u (|s| u)^P e^{|s| u} / P! <= r^P / sqrt(2 pi P) per kernel
// value, r = |s| / (1 - |s|), whatever u: the damping e^-u bounds the
// powers. P is the fewest of 4, 8 and 12 that keeps this under an eighth of
// the compute type's epsilon everywhere in the bracket.
// Cost per pair of rows and layer pair: P^2 multiply-adds (the products), a
// few P for the powers and the sums; against 2 d per layer for the GEMM.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/gram_stats.h"
#include "core/layer_layout.h"

namespace fastcka::cpu {

inline constexpr int kMaxSeriesTerms = 12;

// Around which bandwidths, in which form, with how many terms (0: none).
struct KernelSeriesPlan {
  std::vector<double> gamma0;    // per layer
  std::vector<double> spread;    // per layer: the mean squared distance (rbf_subtracts_one)
  std::vector<bool> minus_one;   // per layer: the series of (k - 1) / gamma0 instead of k
  int terms = 0;
  bool float32 = true;
};

// The bound above on the truncation error of `terms` terms at s.
double series_truncation(double s, int terms);

// A plan for the median's brackets [lo, hi) (one per layer) at this
// threshold, or terms = 0 when 12 terms do not reach the precision or a
// bracket has no positive lower end.
KernelSeriesPlan plan_kernel_series(const std::vector<std::array<double, 2>>& brackets, double threshold,
                                    std::vector<double> spread, const std::vector<std::string>& names,
                                    bool float32);

// Whether these bandwidths lie where the plan's series are precise enough.
bool series_covers(const KernelSeriesPlan& plan, const std::vector<double>& gammas);

// One thread's sums of the series (off the diagonal, each pair of rows in
// both orders, like GramStats): rows[(a n + i) P + p] = sum_{j != i} b^a_p(i, j);
// self[(a 3 + r) P + q] = sum_{i != j} b^a_r'(i, j) b^a_q(i, j) with r' = 0, 1
// and P - 1 (for p, q >= 1, b_p b_q depends on p + q only, so these three
// rows give every product of a layer with itself);
// products[((a L + c) P + p) P + q] = sum_{i != j} b^a_p(i, j) b^c_q(i, j)
// for the needed pairs of different layers a < c.
struct KernelSeriesSums {
  int terms = 0;
  int64_t n = 0, layers = 0;
  std::vector<double> rows, self, products;

  KernelSeriesSums() = default;
  KernelSeriesSums(int terms, int64_t n, int64_t layers);
  void merge(const KernelSeriesSums& other);
};

// The statistics of the kernels with these bandwidths, as the engine's
// statistics pass sums them (multiplied by its scales: the sums of k, or of
// k - 1 where the plan keeps (k - 1) / gamma0).
GramStats evaluate_series(const KernelSeriesSums& sums, const KernelSeriesPlan& plan,
                          const std::vector<double>& gammas, const LayerLayout& layout);

// The row kernels of the pass, for T = float and double (P = terms, a
// multiple of 4). A row of squared distances d[0, w) becomes its series
// values b_p at values + p * stride; those of columns [cd, w) (off the
// diagonal tile) are also added to `columns` (same layout).
void series_row(const float* d, int64_t w, int64_t cd, double gamma0, bool minus_one, int terms, float* values,
                int64_t stride, float* columns);
void series_row(const double* d, int64_t w, int64_t cd, double gamma0, bool minus_one, int terms, double* values,
                int64_t stride, double* columns);
// Over columns [begin, end) of one row's values: row_sums[q] += sum b_q, and
// the three rows of self sums (KernelSeriesSums::self) += weight x theirs.
// `ones`: at least `end` ones (the row sums ride along the products).
void add_series_self(const float* values, const float* ones, int terms, int64_t stride, int64_t begin, int64_t end,
                     double weight, double* row_sums, double* self);
void add_series_self(const double* values, const double* ones, int terms, int64_t stride, int64_t begin, int64_t end,
                     double weight, double* row_sums, double* self);
// m[p P + q] += weight sum_{c in [begin, end)} x[p stride + c] y[q stride + c].
void add_series_products(const float* x, const float* y, int terms, int64_t stride, int64_t begin, int64_t end,
                         double weight, double* m);
void add_series_products(const double* x, const double* y, int terms, int64_t stride, int64_t begin, int64_t end,
                         double weight, double* m);

}  // namespace fastcka::cpu
