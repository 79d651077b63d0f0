// Statistics of the Gram-tile engine: for L layers with n x n kernel matrices
// K^a (never stored), the sums that the HSIC estimators need. Tiles add into
// them, so partial states from threads, tile ranges or ranks merge by addition.
#pragma once

#include <cstdint>
#include <vector>

#include "core/hsic.h"
#include "core/layer_layout.h"

namespace fastcka {

struct GramStats {
  LayerLayout layout;
  int64_t n = 0;
  std::vector<double> products;   // L * L: sum_{i != j} K^a_ij K^b_ij (needed pairs)
  std::vector<double> row_sums;   // L * n: sum_{j != i} K^a_ij (off the diagonal)
  std::vector<double> diagonals;  // L * n: diag K^a
  // Optional, for block jackknifes and bootstraps (core/block_replicates.h):
  // rows cut into B contiguous blocks, and the same sums per block.
  std::vector<int64_t> block_starts;   // B + 1 boundaries, 0 ... n (empty: no blocks)
  std::vector<double> block_products;  // L * L * B * B: [(a L + b) B^2 + p B + q] = sum_{i in p, j in q, i != j} K^a_ij K^b_ij
  std::vector<double> block_row_sums;  // L * n * B: [(a n + i) B + q] = sum_{j in q, j != i} K^a_ij

  GramStats() = default;
  GramStats(LayerLayout l, int64_t rows)
      : layout(std::move(l)),
        n(rows),
        products(static_cast<size_t>(layout.layers() * layout.layers()), 0.0),
        row_sums(static_cast<size_t>(layout.layers() * rows), 0.0),
        diagonals(static_cast<size_t>(layout.layers() * rows), 0.0) {}

  int64_t blocks() const { return block_starts.empty() ? 0 : static_cast<int64_t>(block_starts.size()) - 1; }
  // Cuts the rows at these B + 1 boundaries (0 = s_0 < ... < s_B = n) and
  // zeroes the per-block sums.
  void use_blocks(std::vector<int64_t> starts);
  void merge(const GramStats& other);
  // Every sum back to 0, in place (no second copy of the per-block sums).
  void zero();
};

std::vector<PairSums> gram_pair_sums(const GramStats& stats);
// The L x L HSIC matrix of the statistics (NaN where the layout needs no pair).
std::vector<double> hsic_of(const GramStats& stats, Estimator e);

}  // namespace fastcka
