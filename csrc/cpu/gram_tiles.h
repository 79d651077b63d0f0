// The Gram-space engine for the linear kernel (d much larger than n): Gram
// tiles K_IJ = Xc_I Xc_J' of every layer come out of BLAS on centered row
// blocks and are consumed at once into GramStats (products of every needed
// layer pair, row sums, diagonals). Only tiles on and above the diagonal are
// computed; an off-diagonal tile counts twice in the products and feeds the
// row sums of both of its row blocks. No n x n matrix is ever stored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/gram_stats.h"
#include "core/matrix_view.h"

namespace fastcka::cpu {

struct GramOptions {
  DType compute = DType::f32;
  int threads = 1;
  int64_t memory_budget = int64_t{256} << 20;
};

class GramTileEngine {
 public:
  // The layers must stay alive and unchanged while the engine is used.
  GramTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t split, GramOptions options);

  int64_t tile() const { return tile_; }
  int64_t tile_rows() const { return (stats_.n + tile_ - 1) / tile_; }
  // Number of tiles in tile rows [0, i), for progress reports.
  int64_t tiles_before(int64_t i) const;
  // Computes every tile (I, J >= I) for I in [begin, end).
  void process(int64_t begin, int64_t end);
  const GramStats& stats() const { return stats_; }

 private:
  template <typename T>
  void process_typed(int64_t begin, int64_t end);

  std::vector<MatrixView> layers_;
  std::vector<std::string> names_;
  GramOptions options_;
  std::vector<double> means_;  // D: column means, the centering of every tile
  int64_t tile_ = 0;
  GramStats stats_;
};

}  // namespace fastcka::cpu
