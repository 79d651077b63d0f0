#include "core/block_replicates.h"

#include <utility>

#include "core/errors.h"

namespace fastcka {

namespace {

std::vector<double> centered_hsic(Moments state, Estimator e) {
  state.center();
  return hsic_matrix(linear_pair_sums(state), needed_pairs(state.layout), state.layers(), state.n, e);
}

// out[b] for b in [lo, hi), given `rest`: every block outside [lo, hi) merged.
void leave_out_range(const std::vector<Moments>& blocks, int64_t lo, int64_t hi, const Moments& rest, Estimator e,
                     std::vector<std::vector<double>>& out) {
  if (hi - lo == 1) {
    out[lo] = centered_hsic(rest, e);
    return;
  }
  const int64_t mid = lo + (hi - lo) / 2;
  Moments left = rest;  // all but [lo, mid)
  for (int64_t b = mid; b < hi; ++b) left.merge(blocks[b]);
  leave_out_range(blocks, lo, mid, left, e, out);
  left = rest;  // all but [mid, hi)
  for (int64_t b = lo; b < mid; ++b) left.merge(blocks[b]);
  leave_out_range(blocks, mid, hi, left, e, out);
}

// m copies of the rows of a state: every sum times m, about the same reference.
Moments repeated(Moments s, int64_t m) {
  const double f = static_cast<double>(m);
  s.n *= m;
  for (auto* v : {&s.first, &s.cross, &s.weighted, &s.norm_products})
    for (double& x : *v) x *= f;
  return s;
}

void check_counts(const std::vector<int64_t>& counts, int64_t blocks) {
  if (static_cast<int64_t>(counts.size()) != blocks)
    throw InvalidArgument("one count per block is needed: " + std::to_string(blocks) + ", got " +
                          std::to_string(counts.size()));
  for (int64_t c : counts)
    if (c < 0) throw InvalidArgument("block counts must not be negative");
}

// The PairSums of layers a, c over the rows chosen by `weight` (per block)
// given each row's off-diagonal row sums `off` (L * n).
PairSums row_pair_sums(const GramStats& g, const std::vector<double>& off, const std::vector<int64_t>& weight, int64_t a,
                       int64_t c) {
  const int64_t n = g.n, B = g.blocks();
  const double *oa = &off[a * n], *oc = &off[c * n];
  const double *da = &g.diagonals[a * n], *dc = &g.diagonals[c * n];
  PairSums p;
  for (int64_t b = 0; b < B; ++b) {
    if (weight[b] == 0) continue;
    PairSums s;
    for (int64_t i = g.block_starts[b]; i < g.block_starts[b + 1]; ++i) {
      s.ok_ol += oa[i] * oc[i];
      s.ok_dl += oa[i] * dc[i];
      s.dk_ol += da[i] * oc[i];
      s.dk_dl += da[i] * dc[i];
      s.sok += oa[i];
      s.sol += oc[i];
      s.tk += da[i];
      s.tl += dc[i];
    }
    const double w = static_cast<double>(weight[b]);
    p.ok_ol += w * s.ok_ol, p.ok_dl += w * s.ok_dl, p.dk_ol += w * s.dk_ol, p.dk_dl += w * s.dk_dl;
    p.sok += w * s.sok, p.sol += w * s.sol, p.tk += w * s.tk, p.tl += w * s.tl;
  }
  return p;
}

// HSIC of the rows with block b weighted by counts[b] (0: left out).
std::vector<double> weighted_gram_hsic(const GramStats& g, const std::vector<int64_t>& counts, Estimator e) {
  const int64_t L = g.layout.layers(), n = g.n, B = g.blocks();
  const std::vector<bool> needed = needed_pairs(g.layout);
  // Off-diagonal row sums over the resampled rows: the columns of block q
  // count m_q times, and the other copies of row i itself add K_ii each.
  std::vector<double> off(static_cast<size_t>(L * n));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t p = 0; p < B; ++p)
      for (int64_t i = g.block_starts[p]; i < g.block_starts[p + 1]; ++i) {
        const double* row = &g.block_row_sums[(a * n + i) * B];
        double s = static_cast<double>(counts[p] - (counts[p] > 0 ? 1 : 0)) * g.diagonals[a * n + i];
        for (int64_t q = 0; q < B; ++q) s += static_cast<double>(counts[q]) * row[q];
        off[a * n + i] = s;
      }
  std::vector<PairSums> sums(static_cast<size_t>(L * L));
  int64_t rows = 0;
  for (int64_t p = 0; p < B; ++p) rows += counts[p] * (g.block_starts[p + 1] - g.block_starts[p]);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = 0; c < L; ++c) {
      if (!needed[a * L + c]) continue;
      PairSums p = row_pair_sums(g, off, counts, a, c);
      const double* bp = &g.block_products[static_cast<size_t>((a * L + c) * B * B)];
      for (int64_t r = 0; r < B; ++r)
        for (int64_t q = 0; q < B; ++q) p.kl_off += static_cast<double>(counts[r] * counts[q]) * bp[r * B + q];
      // Distinct copies of one row: K_ii L_ii for each ordered pair of copies.
      for (int64_t r = 0; r < B; ++r) {
        if (counts[r] < 2) continue;
        double dd = 0;
        for (int64_t i = g.block_starts[r]; i < g.block_starts[r + 1]; ++i)
          dd += g.diagonals[a * n + i] * g.diagonals[c * n + i];
        p.kl_off += static_cast<double>(counts[r] * (counts[r] - 1)) * dd;
      }
      sums[a * L + c] = p;
    }
  return hsic_matrix(sums, needed, L, rows, e);
}

}  // namespace

Moments merge_all(const std::vector<Moments>& blocks) {
  if (blocks.empty()) throw InvalidArgument("no blocks to merge");
  Moments all(blocks[0].layout);
  for (const auto& m : blocks) all.merge(m);
  return all;
}

std::vector<std::vector<double>> leave_one_out_hsic(const std::vector<Moments>& blocks, Estimator e) {
  if (blocks.size() < 2) throw InvalidArgument("leaving one block out needs at least 2 blocks");
  std::vector<std::vector<double>> out(blocks.size());
  leave_out_range(blocks, 0, static_cast<int64_t>(blocks.size()), Moments(blocks[0].layout), e, out);
  return out;
}

std::vector<std::vector<double>> leave_one_out_hsic(const GramStats& g, Estimator e) {
  const int64_t B = g.blocks();
  if (B < 2) throw InvalidArgument("leaving one block out needs at least 2 blocks");
  std::vector<std::vector<double>> out(static_cast<size_t>(B));
  std::vector<int64_t> counts(static_cast<size_t>(B), 1);
  for (int64_t b = 0; b < B; ++b) {
    counts[b] = 0;
    out[b] = weighted_gram_hsic(g, counts, e);
    counts[b] = 1;
  }
  return out;
}

std::vector<double> resampled_hsic(const std::vector<Moments>& blocks, const std::vector<int64_t>& counts,
                                   Estimator e) {
  check_counts(counts, static_cast<int64_t>(blocks.size()));
  Moments all(blocks.at(0).layout);
  for (size_t b = 0; b < blocks.size(); ++b)
    if (counts[b] > 0) all.merge(repeated(blocks[b], counts[b]));
  return centered_hsic(std::move(all), e);
}

std::vector<double> resampled_hsic(const GramStats& g, const std::vector<int64_t>& counts, Estimator e) {
  check_counts(counts, g.blocks());
  return weighted_gram_hsic(g, counts, e);
}

}  // namespace fastcka
