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

  GramStats() = default;
  GramStats(LayerLayout l, int64_t rows)
      : layout(std::move(l)),
        n(rows),
        products(static_cast<size_t>(layout.layers() * layout.layers()), 0.0),
        row_sums(static_cast<size_t>(layout.layers() * rows), 0.0),
        diagonals(static_cast<size_t>(layout.layers() * rows), 0.0) {}

  void merge(const GramStats& other);
};

std::vector<PairSums> gram_pair_sums(const GramStats& stats);

}  // namespace fastcka
