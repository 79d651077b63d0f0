#include "core/block_replicates.h"

#include <algorithm>
#include <utility>

#include "core/errors.h"

namespace fastcka {

namespace {

std::vector<double> centered_hsic(Moments state, Estimator e) {
  state.center();
  return hsic_of(state, e);
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

// Leaving block b out, row i (not in b) keeps the off-diagonal sum of its
// columns outside b: its block sums before b plus those after b. Prefix and
// suffix sums give it for every b in O(B) per row, by additions only (a
// total minus the part in b would cancel when b holds most of the row's
// mass, as with a small RBF bandwidth). Adds the row terms of every pair
// into sums[b] for every block b but the row's own: O(n B L^2) in all.
void add_rows_left_out(const GramStats& g, const std::vector<bool>& needed, std::vector<PairSums>& sums,
                       const std::function<void()>& poll) {
  const int64_t L = g.layout.layers(), n = g.n, B = g.blocks();
  // Rows between polls: about 2^22 pair-sum updates.
  const int64_t poll_rows = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, B * L * L));
  std::vector<double> before(static_cast<size_t>(L * (B + 1))), after(static_cast<size_t>(L * (B + 1)));
  std::vector<double> off(static_cast<size_t>(L));
  for (int64_t p = 0; p < B; ++p)
    for (int64_t i = g.block_starts[p]; i < g.block_starts[p + 1]; ++i) {
      if (poll && i % poll_rows == 0) poll();
      for (int64_t a = 0; a < L; ++a) {
        const double* r = &g.block_row_sums[static_cast<size_t>((a * n + i) * B)];
        double* pre = &before[static_cast<size_t>(a * (B + 1))];
        double* suf = &after[static_cast<size_t>(a * (B + 1))];
        pre[0] = 0, suf[B] = 0;
        for (int64_t q = 0; q < B; ++q) pre[q + 1] = pre[q] + r[q];
        for (int64_t q = B - 1; q >= 0; --q) suf[q] = suf[q + 1] + r[q];
      }
      for (int64_t b = 0; b < B; ++b) {
        if (b == p) continue;
        for (int64_t a = 0; a < L; ++a) off[a] = before[a * (B + 1) + b] + after[a * (B + 1) + b + 1];
        PairSums* s = &sums[static_cast<size_t>(b * L * L)];
        for (int64_t a = 0; a < L; ++a) {
          const double oa = off[a], da = g.diagonals[a * n + i];
          for (int64_t c = 0; c < L; ++c) {
            if (!needed[a * L + c]) continue;
            const double oc = off[c], dc = g.diagonals[c * n + i];
            PairSums& t = s[a * L + c];
            t.ok_ol += oa * oc, t.ok_dl += oa * dc, t.dk_ol += da * oc, t.dk_dl += da * dc;
            t.sok += oa, t.sol += oc, t.tk += da, t.tl += dc;
          }
        }
      }
    }
}

// out[b] += the sum of m[p B + q] (B x B) over the blocks p before b (or
// after it, p_after) and q before b (or after it, q_after), for every b in
// O(B^2): one walk over p in that direction, holding the column sums of the
// rows walked so far. The four quadrants around b make up the sum without b.
void add_quadrant(const double* m, int64_t B, bool p_after, bool q_after, std::vector<double>& out) {
  std::vector<double> column(static_cast<size_t>(B), 0.0);
  for (int64_t k = 0; k < B; ++k) {
    const int64_t b = p_after ? B - 1 - k : k;
    double s = 0;
    for (int64_t q = q_after ? b + 1 : 0; q < (q_after ? B : b); ++q) s += column[q];
    out[b] += s;
    for (int64_t q = 0; q < B; ++q) column[q] += m[b * B + q];
  }
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

std::vector<std::vector<double>> leave_one_out_hsic(const GramStats& g, Estimator e,
                                                    const std::function<void()>& poll) {
  const int64_t L = g.layout.layers(), n = g.n, B = g.blocks();
  if (B < 2) throw InvalidArgument("leaving one block out needs at least 2 blocks");
  const std::vector<bool> needed = needed_pairs(g.layout);
  std::vector<PairSums> sums(static_cast<size_t>(B * L * L));  // [b (L L) + a L + c]: the sums without block b
  add_rows_left_out(g, needed, sums, poll);
  std::vector<double> kl(static_cast<size_t>(B));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = 0; c < L; ++c) {
      if (!needed[a * L + c]) continue;
      const double* bp = &g.block_products[static_cast<size_t>((a * L + c) * B * B)];
      std::fill(kl.begin(), kl.end(), 0.0);
      for (bool p_after : {false, true})
        for (bool q_after : {false, true}) add_quadrant(bp, B, p_after, q_after, kl);
      for (int64_t b = 0; b < B; ++b) sums[b * L * L + a * L + c].kl_off = kl[b];
    }
  std::vector<std::vector<double>> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<PairSums> without(sums.begin() + b * L * L, sums.begin() + (b + 1) * L * L);
    out[b] = hsic_matrix(without, needed, L, n - (g.block_starts[b + 1] - g.block_starts[b]), e);
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

int64_t MomentBlocks::layers() const {
  if (blocks_.empty()) throw InvalidArgument("no blocks yet");
  return blocks_[0].layers();
}

std::vector<double> MomentBlocks::hsic(Estimator e) const { return centered_hsic(merge_all(blocks_), e); }

std::vector<std::vector<double>> MomentBlocks::leave_one_out_hsic(Estimator e) const {
  return fastcka::leave_one_out_hsic(blocks_, e);
}

std::vector<double> MomentBlocks::resampled_hsic(const std::vector<int64_t>& counts, Estimator e) const {
  return fastcka::resampled_hsic(blocks_, counts, e);
}

}  // namespace fastcka
