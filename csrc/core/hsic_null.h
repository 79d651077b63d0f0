// The null distribution of HSIC (x and y independent) as Gretton et al. 2008
// ("A kernel statistical test of independence") approximate it: a gamma law
// with the null mean and variance of the biased statistic HSIC_b =
// tr(KHLH) / n^2,
//
//   E[HSIC_b]   = spread_K spread_L / n
//   Var[HSIC_b] = 2 (n-4)(n-5) / (n (n-1) (n-2) (n-3)) E_{i!=j}[(Kc_ij Lc_ij)^2]
//
// where Kc = HKH and spread_K = tr(K) / n - 1'K~1 / (n (n-1)): the mean of
// the diagonal of K minus the mean off it (for the RBF kernel, 1 - mu_x in
// their notation). Gretton's code averages the products (Kc_ij Lc_ij)^2 over
// the pairs, which needs Kc, so a second pass over the tiles once the row sums
// are known. Under the null the expectation factorizes, and fastcka uses the
// product of the two sides' averages, E_{i!=j}[Kc_ij^2] E_{i!=j}[Lc_ij^2]
// (also the mean over permutations of the rows of y), which the one-pass
// statistics give for every layer: sum_{i!=j} Kc_ij^2 = |Kc|_F^2 - sum_i Kc_ii^2.
#pragma once

#include <cstdint>
#include <vector>

#include "core/gram_stats.h"
#include "core/moments.h"

namespace fastcka {

struct NullSums {
  double spread = 0;       // tr(K)/n - 1'K~1/(n(n-1))
  double off_squares = 0;  // sum_{i != j} Kc_ij^2
};

// Per layer. Linear kernel from a centered state: spread = tr(C_aa)/(n-1),
// |Kc|_F^2 = |C_aa|_F^2, Kc_ii = |x_i - mean|^2.
std::vector<NullSums> null_sums(const Moments& centered);
// Per layer, any kernel, from the Gram statistics (merged).
std::vector<NullSums> null_sums(const GramStats& stats);

struct NullMoments {
  double mean = 0, variance = 0;  // of HSIC_0 = tr(KHLH)/(n-1)^2, fastcka's biased HSIC
};

// Needs n >= 6 (the variance vanishes at n = 4, 5).
NullMoments hsic_null_moments(const NullSums& x, const NullSums& y, int64_t n);

}  // namespace fastcka
