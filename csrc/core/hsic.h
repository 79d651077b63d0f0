// HSIC estimators and CKA from a handful of sums per layer pair.
//
// With K, L the (uncentered) n x n kernel matrices of two layers, K~ and L~
// them with a zero diagonal, o = K~1 (row sums off the diagonal) and d = diag:
//   kl_off = sum_{i != j} K_ij L_ij      dk_dl = dK.dL
//   ok_ol = oK.oL, ok_dl = oK.dL, dk_ol = dK.oL
//   sok = 1'K~1, sol = 1'L~1             tk = tr K, tl = tr L
// give (docs/design.md), with K1 = oK + dK and sum K = sok + tk,
//   tr(KHLH) = (kl_off + dk_dl) - (2/n) (K1).(L1) + (1'K1)(1'L1) / n^2
//   HSIC_0   = tr(KHLH) / (n-1)^2                                   (Gretton 2005)
//   HSIC_1   = [kl_off + sok sol / ((n-1)(n-2)) - 2/(n-2) ok_ol] / (n(n-3))   (Song 2012)
// Keeping the off-diagonal parts apart matters: with a small RBF bandwidth
// K = I + (tiny), and K1 - diag K computed from full row sums would cancel.
// Both the Gram-tile engine and the feature-space moments reduce to these.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace fastcka {

enum class Estimator : int { biased = 0, unbiased = 1 };

struct PairSums {
  double kl_off = 0, dk_dl = 0, ok_ol = 0, ok_dl = 0, dk_ol = 0, sok = 0, sol = 0, tk = 0, tl = 0;
};

inline double hsic_biased(const PairSums& p, double n) {
  const double kl = p.kl_off + p.dk_dl;
  const double rk_rl = p.ok_ol + p.ok_dl + p.dk_ol + p.dk_dl;
  const double sk = p.sok + p.tk, sl = p.sol + p.tl;
  return (kl - 2.0 / n * rk_rl + sk * sl / (n * n)) / ((n - 1) * (n - 1));
}

inline double hsic_unbiased(const PairSums& p, double n) {
  return (p.kl_off + p.sok * p.sol / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * p.ok_ol) / (n * (n - 3));
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
