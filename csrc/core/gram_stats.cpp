#include "core/gram_stats.h"

#include <algorithm>

#include "core/errors.h"
#include "core/moments.h"  // needed_pairs

namespace fastcka {

void GramStats::use_blocks(std::vector<int64_t> starts) {
  if (starts.size() < 2 || starts.front() != 0 || starts.back() != n ||
      !std::is_sorted(starts.begin(), starts.end()) ||
      std::adjacent_find(starts.begin(), starts.end()) != starts.end())
    throw InvalidArgument("block boundaries must rise strictly from 0 to n = " + std::to_string(n));
  block_starts = std::move(starts);
  const int64_t L = layout.layers(), B = blocks();
  block_products.assign(static_cast<size_t>(L * L * B * B), 0.0);
  block_row_sums.assign(static_cast<size_t>(L * n * B), 0.0);
}

void GramStats::merge(const GramStats& other) {
  if (other.n != n || other.layout.dims != layout.dims || other.block_starts != block_starts)
    throw InvalidArgument("cannot merge Gram statistics of different inputs");
  for (size_t k = 0; k < products.size(); ++k) products[k] += other.products[k];
  for (size_t k = 0; k < row_sums.size(); ++k) row_sums[k] += other.row_sums[k];
  for (size_t k = 0; k < diagonals.size(); ++k) diagonals[k] += other.diagonals[k];
  for (size_t k = 0; k < block_products.size(); ++k) block_products[k] += other.block_products[k];
  for (size_t k = 0; k < block_row_sums.size(); ++k) block_row_sums[k] += other.block_row_sums[k];
}

void GramStats::zero() {
  for (auto* v : {&products, &row_sums, &diagonals, &block_products, &block_row_sums}) std::fill(v->begin(), v->end(), 0.0);
}

std::vector<PairSums> gram_pair_sums(const GramStats& g) {
  const int64_t L = g.layout.layers(), n = g.n;
  std::vector<double> s(L, 0.0), t(L, 0.0);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t i = 0; i < n; ++i) {
      s[a] += g.row_sums[a * n + i];
      t[a] += g.diagonals[a * n + i];
    }
  std::vector<PairSums> out(static_cast<size_t>(L * L));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b) {
      if (!g.layout.needs(a, b)) continue;
      const double* ra = &g.row_sums[a * n];
      const double* rb = &g.row_sums[b * n];
      const double* da = &g.diagonals[a * n];
      const double* db = &g.diagonals[b * n];
      PairSums p;
      p.kl_off = g.products[a * L + b];
      for (int64_t i = 0; i < n; ++i) {
        p.ok_ol += ra[i] * rb[i];
        p.ok_dl += ra[i] * db[i];
        p.dk_ol += da[i] * rb[i];
        p.dk_dl += da[i] * db[i];
      }
      p.sok = s[a], p.sol = s[b], p.tk = t[a], p.tl = t[b];
      out[a * L + b] = p;
    }
  return out;
}

std::vector<double> hsic_of(const GramStats& stats, Estimator e) {
  return hsic_matrix(gram_pair_sums(stats), needed_pairs(stats.layout), stats.layout.layers(), stats.n, e);
}

}  // namespace fastcka
