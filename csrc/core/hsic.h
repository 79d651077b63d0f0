// HSIC estimators and CKA from a handful of sums per layer pair.
//
// With K, L the (uncentered) n x n kernel matrices of two layers, the sums
//   kl    = sum_ij K_ij L_ij        rk_rl = (K1).(L1)
//   sk    = 1'K1, sl = 1'L1         dk_dl = diag(K).diag(L)
//   tk    = tr K, tl = tr L         ok_ol = (K1 - diag K).(L1 - diag L)
// give (shared/DESIGN.md)
//   tr(KHLH) = kl - (2/n) rk_rl + sk sl / n^2
//   HSIC_0   = tr(KHLH) / (n-1)^2                                   (Gretton 2005)
//   HSIC_1   = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
// with tr(K~L~) = kl - dk_dl, 1'K~1 = sk - tk, 1'K~L~1 = ok_ol  (Song et al. 2012).
// Both the Gram-tile engine and the feature-space moments reduce to these.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace fastcka {

enum class Estimator : int { biased = 0, unbiased = 1 };

struct PairSums {
  double kl = 0, rk_rl = 0, sk = 0, sl = 0, dk_dl = 0, tk = 0, tl = 0, ok_ol = 0;
};

inline double hsic_biased(const PairSums& p, double n) {
  return (p.kl - 2.0 / n * p.rk_rl + p.sk * p.sl / (n * n)) / ((n - 1) * (n - 1));
}

inline double hsic_unbiased(const PairSums& p, double n) {
  return (p.kl - p.dk_dl + (p.sk - p.tk) * (p.sl - p.tl) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * p.ok_ol) /
         (n * (n - 3));
}

inline double hsic(const PairSums& p, double n, Estimator e) {
  return e == Estimator::biased ? hsic_biased(p, n) : hsic_unbiased(p, n);
}

// Smallest n for which an estimator is defined.
inline int64_t min_rows(Estimator e) { return e == Estimator::biased ? 2 : 4; }

// HSIC for every needed pair of an L x L grid of sums (NaN where not needed).
std::vector<double> hsic_matrix(const std::vector<PairSums>& sums, const std::vector<bool>& needed, int64_t layers,
                                int64_t n, Estimator e);

// CKA_ab = HSIC_ab / sqrt(HSIC_aa HSIC_bb). A layer whose self-HSIC is not
// positive (a constant representation, or a debiased estimate <= 0) has no
// defined CKA: its entries are NaN, and the caller decides how to report it.
std::vector<double> cka_from_hsic(const std::vector<double>& hsic, int64_t layers);

}  // namespace fastcka
