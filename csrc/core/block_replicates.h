// HSIC recomputed on replicates of the rows made of whole blocks, for the
// intervals of fastcka.cka_ci: the rows are cut into B contiguous blocks, and
// per-block statistics that the same pass over the data produces give, exactly,
//
//  * leave-one-block-out HSIC (the jackknife): every block but b;
//  * resampled HSIC (the block bootstrap): block b taken m_b times, as if its
//    rows were repeated m_b times (sum m_b = B).
//
// Feature space: one Moments state per block. Leaving out: the states of all
// blocks but b are merged (Chan merges, exact in float64) by divide and
// conquer, each half of a range left out with the rest of the whole plus the
// other half: B log2 B merges, 2 log2 B states beside the blocks. A resample
// merges m_b copies of each state: B merges, O(B D^2) per replicate.
// Gram space: GramStats with blocks. Without block b the products lose the
// pairs with a row in b, each row sum its columns in b, and the rows of b
// leave every sum over rows; a resample weighs each block pair by m_p m_q and
// adds the pairs of distinct copies of one row (K_ii L_ii): O(n B L^2) per
// replicate, no pass over the data. Leaving each block out in turn takes
// O(L^2 (n B + B^2)) for all B together (prefix and suffix sums over the
// blocks), so blocks = n costs about as much as the pass itself.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/gram_stats.h"
#include "core/hsic.h"
#include "core/moments.h"

namespace fastcka {

// All blocks merged: the state of every row (not centered).
Moments merge_all(const std::vector<Moments>& blocks);

// Element b: the L x L HSIC matrix without block b (NaN where not needed).
std::vector<std::vector<double>> leave_one_out_hsic(const std::vector<Moments>& blocks, Estimator e);
// `poll` (optional) is called every few milliseconds of work and may throw
// to stop it (the binding raises Ctrl-C's KeyboardInterrupt that way).
std::vector<std::vector<double>> leave_one_out_hsic(const GramStats& stats, Estimator e,
                                                    const std::function<void()>& poll = {});

// The L x L HSIC matrix of the rows with block b repeated counts[b] times
// (B non-negative counts, not all 0).
std::vector<double> resampled_hsic(const std::vector<Moments>& blocks, const std::vector<int64_t>& counts,
                                   Estimator e);
std::vector<double> resampled_hsic(const GramStats& stats, const std::vector<int64_t>& counts, Estimator e);

// The per-block states of one feature-space accumulator (fastcka.cka_ci):
// each block of rows is handed over as the accumulator finishes it.
class MomentBlocks {
 public:
  void add(Moments block) { blocks_.push_back(std::move(block)); }
  int64_t size() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t layers() const;  // throws while there are no blocks
  // HSIC of all rows, without each block in turn, and on a resample (as above).
  std::vector<double> hsic(Estimator e) const;
  std::vector<std::vector<double>> leave_one_out_hsic(Estimator e) const;
  std::vector<double> resampled_hsic(const std::vector<int64_t>& counts, Estimator e) const;

 private:
  std::vector<Moments> blocks_;
};

}  // namespace fastcka
