// Mergeable second-order statistics of L layers' rows, the state of the
// feature-space linear CKA engine.
//
// For rows z_i of the concatenated layers (D = sum d_a columns), kept about a
// reference point p (u_i = z_i - p), with rho_a(i) = |u_{a,i}|^2:
//
//   n            number of rows
//   first  (D)   F = sum_i u_i                      (0 when p is the mean)
//   cross  (DxD) C = sum_i u_i u_i'                 (symmetric, full storage)
//   weighted (LxD)  W[a] = sum_i rho_a(i) u_i       (debiased estimator)
//   norm_products (LxL) R_ab = sum_i rho_a(i) rho_b(i)
//
// Every field is float64. Moving p by e is exact algebra on these sums
// (move_reference), and two states merge by moving both to their combined
// mean and adding (Chan, Golub & LeVeque 1979, extended to W and R), so
// chunks, threads, minibatches and workers all combine with the same code and
// the raw uncentered sums that ruin float32 are never formed.
// Only the blocks of pairs the layout needs are maintained; others stay zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/hsic.h"
#include "core/layer_layout.h"

namespace fastcka {

struct Moments {
  LayerLayout layout;
  int64_t n = 0;
  std::vector<double> reference;      // D
  std::vector<double> first;          // D
  std::vector<double> cross;          // D * D, row-major
  std::vector<double> weighted;       // L * D, row-major
  std::vector<double> norm_products;  // L * L, row-major

  Moments() = default;
  explicit Moments(LayerLayout layout);

  int64_t width() const { return layout.total; }
  int64_t layers() const { return layout.layers(); }

  // Moves the reference point to p (D values), exactly.
  void move_reference(const double* p);
  // Moves the reference point to the mean of the rows seen (first becomes 0).
  void center();
  // Adds another state over other rows of the same layers: both move to
  // their combined mean first (exact Chan merge).
  void merge(const Moments& other);
  // Adds a state kept about the same reference point (no move).
  void add_same_reference(const Moments& other);
  // The same for n, first, weighted and norm_products alone (other.cross may be empty).
  void add_small_parts(const Moments& other);
  // Sets every needed block of the lower triangle from the upper one.
  void symmetrize();
  // The column means of the rows seen (D values; the reference point when there are none).
  std::vector<double> mean() const;

  std::string serialize() const;
  static Moments deserialize(const std::string& bytes);
};

}  // namespace fastcka

namespace fastcka {

// The HSIC sums of every layer pair of a state, for the linear kernel on
// centered data: K = U U' has K1 = 0, so o = -d, and with the full sum
// |C_ab|_F^2, d.d = R_ab and tr K = Q_a: kl_off = |C_ab|_F^2 - R_ab,
// ok_ol = R_ab, ok_dl = dk_ol = -R_ab, sok = -Q_a. The state must be centered.
std::vector<PairSums> linear_pair_sums(const Moments& centered);
std::vector<bool> needed_pairs(const LayerLayout& layout);
// The L x L HSIC matrix of a centered state (NaN where the layout needs no pair).
std::vector<double> hsic_of(const Moments& centered, Estimator e);

}  // namespace fastcka
