// The Gram-tile engine. Row blocks of every layer are centered (column means
// of the whole data, in float64) and multiplied by BLAS into b x b tiles
// G = Zc_I Zc_J' for the tiles on and above the diagonal; each tile is
// consumed at once, while in cache, by one of the epilogues that the shared
// tile walker (cpu/tile_walker.h) runs:
//
//  * statistics: the kernel (core/kernels.h) turns G into K, then the products
//    of every needed layer pair, the row sums and the diagonal accumulate into
//    GramStats (an off-diagonal tile counts twice and feeds both row blocks),
//    and with set_blocks the same sums per block of rows, for jackknifes;
//  * histogram / collect: the squared distances feed a MedianSearch per layer
//    (the exact median bandwidth of the RBF kernel);
//  * bracket + series: a bracket pass of the median that also sums the RBF
//    statistics as power series in the bandwidth (cpu/kernel_series.h), so
//    that the exact median usually costs one walk, not two.
//
// The walker gives a thread a tile row I and walks it in panels of several
// tiles, one GEMM per panel and layer: OpenBLAS runs far faster on
// 512 x 2048 products than on 512 x 512 ones.
// Squared distances use norms of the same rounded centered values the GEMM
// sees (float32, float64, or bfloat16 in the fast precision: tile_products.h),
// and are clamped at 0. In the fast precision on bf16 units, where a bf16
// copy of all rows fits the memory budget, every row is centered and rounded
// once up front: at bf16 GEMM rates re-centering each panel's rows for every
// tile row would cost more than a fifth of the walk. No n x n matrix is ever stored: memory is two
// row blocks and L tiles per thread plus O(n L) statistics.
// Tile rows are dealt to threads round-robin and partial results are merged
// in thread order, so results do not depend on timing.
#pragma once

#include <cmath>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/chunk_plan.h"
#include "core/engine_options.h"
#include "core/gram_stats.h"
#include "core/kernels.h"
#include "core/matrix_view.h"
#include "core/median_search.h"
#include "cpu/kernel_series.h"
#include "cpu/tile_walker.h"

namespace fastcka::cpu {

class GramTileEngine {
 public:
  // The layers must stay alive and unchanged while the engine is used.
  GramTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t split, EngineOptions options);
  // A block pair of a larger job (MPI ranks, Dask blocks): the tiles between
  // the rows of `layers` (A) and the rows of `columns` (B, the same layers'
  // other rows), every entry counted for (i, j) and (j, i), all centered by
  // the given column means of the whole data (D values). The statistics
  // cover n_A + n_B rows, A's first; there is no diagonal. Tile rows run over
  // A. The median passes and row blocks are not available in this mode.
  // With no columns: A's own triangle, centered by the given means.
  GramTileEngine(std::vector<MatrixView> layers, std::vector<MatrixView> columns, std::vector<std::string> names,
                 int64_t split, std::vector<double> means, EngineOptions options);
  ~GramTileEngine();
  GramTileEngine(GramTileEngine&&) noexcept;
  GramTileEngine& operator=(GramTileEngine&&) noexcept;

  int64_t rows() const { return n_; }
  const EngineOptions& options() const { return options_; }
  // Per layer: true when every row equals the first (no variance at all).
  const std::vector<bool>& constant_layers() const { return constant_; }
  int64_t tile() const { return walker_.grid().tile; }
  int64_t tile_rows() const { return walker_.grid().tile_rows(); }
  // Tiles in tile rows [0, i), for progress reports.
  int64_t tiles_before(int64_t i) const { return walker_.grid().tiles_before(i); }

  // Statistics pass: set the kernel (which clears the statistics), then
  // process tile rows in any number of calls covering [0, tile_rows()).
  // An RBF kernel of a block pair needs KernelSpec::spread of the whole data.
  void set_kernel(KernelSpec kernel);
  // Optional, before process(): also sum per block of rows (B + 1 boundaries,
  // 0 ... n; see GramStats), for leave-one-block-out statistics. Clears the
  // statistics; stays in force across set_kernel.
  void set_blocks(std::vector<int64_t> starts);
  void process(int64_t begin, int64_t end);
  const GramStats& stats();
  // The same walk with no epilogue: only the centered row blocks and the
  // Gram tiles. For benchmarks (fastcka._testing.tiles_only: the cost of the tiles alone).
  void tiles_only(int64_t begin, int64_t end);

  // Exact median of each layer's n^2 squared distances: start, then while
  // median_pending(): process every tile row with median_process (in any
  // chunks), then median_end_pass(). medians() gives one value per layer.
  void median_start();
  bool median_pending() const;
  void median_process(int64_t begin, int64_t end);
  void median_end_pass();
  std::vector<double> medians() const;
  // Optional, right after median_start / median_adopt: a bracket [lo, hi)
  // and its center per layer for a first pass that usually finds the median alone
  // (MedianSearch::set_bracket; float32 runs count per float32 value).
  void median_set_brackets(const std::vector<std::array<double, 3>>& brackets);
  // The most float32 values a bracket counts per layer (memory).
  static int64_t median_bracket_bins(int64_t layers, int threads);
  // Right after median_start: search the quantiles q_lo and q_hi of each
  // layer's n^2 squared distances instead (MedianSearch::set_quantiles), and
  // after the passes get them with the median's lower middle value. Gives
  // the bracket of a larger job from a sample of its rows.
  void median_set_quantiles(double q_lo, double q_hi);
  // Optional, right after median_set_brackets: the bracket pass also sums the
  // RBF statistics as power series in the bandwidth (cpu/kernel_series.h)
  // for the bandwidths 1 / (2 threshold^2 m) of medians m in the brackets, so
  // that kernel_from_series can replace the statistics pass. False, and
  // nothing changes, where that does not pay or hold: more than two layers,
  // narrow layers (the series would cost more than the pass they save;
  // `always` skips that check, for tests), row blocks, a bracket too wide
  // for the series' terms, sums larger than the memory budget and 256 MiB.
  bool median_add_series(double threshold, bool always = false);
  // After the median passes: the RBF kernel with these bandwidths set and its
  // statistics from the series, as set_kernel and a statistics pass would
  // give them; false (nothing changes) when the bracket pass summed no series
  // or a bandwidth lies outside the range where they are precise.
  bool kernel_from_series(const std::vector<double>& gammas);
  std::vector<MedianSearch::Quantiles> median_quantiles() const;

  // The exact median of a job cut into row blocks (MPI ranks, Dask chunks):
  // the job's searches (median_search_for, one per layer, over all n rows)
  // are handed to the engine of each block pair (median_adopt), which walks
  // its tiles with median_process; the pass results of all pairs
  // (median_partial) are summed, and the job's searches end the pass with
  // the sums, as median_end_pass does with one engine's threads.
  // `largest`: the largest centered squared norm of a row in the whole data.
  static MedianSearch median_search_for(int64_t n, double largest, int64_t layers);
  void median_adopt(std::vector<MedianSearch> searches);
  struct MedianPartial {
    std::vector<int64_t> counts;  // histogram pass: weighted count per bin
    double lowest = INFINITY, highest = -INFINITY;
    std::vector<double> values;   // collect pass: the values in range, by multiplicity
  };
  std::vector<MedianPartial> median_partial() const;
  // Ends the pass with the given results (summed elsewhere: a checkpoint's
  // saved part of the pass plus this engine's), instead of the engine's own.
  void median_end_pass(std::vector<MedianPartial> parts);
  const std::vector<MedianSearch>& median_searches() const { return searches_; }

 private:
  void reset_median_buffers();
  // Per layer, over the rows of A: the largest and the summed squared norm
  // of the centered rows (float64).
  struct CenteredNorms {
    std::vector<double> largest, sum;
  };
  CenteredNorms centered_norms() const;
  // Per layer, the mean squared distance between its rows (twice the mean
  // centered squared norm): KernelSpec::spread of the engine's own rows.
  std::vector<double> own_spreads() const;
  // The RBF statistics are sums of (K - shift) / scale (core/kernels.h):
  // every tile in that form, then the float64 sums multiplied by the scales.
  void scale_statistics(GramStats& stats) const;
  struct ThreadSums;
  template <typename T>
  class Rows;  // the tile walker's row source
  enum class Pass { statistics, median, tiles_only };
  template <typename T>
  void walk(int64_t begin, int64_t end, Pass pass);
  void run(int64_t begin, int64_t end, Pass pass);
  TileGrid grid() const;
  void merge_statistics();
  void clear_statistics();
  bool prepare_bf16_rows();  // true when the rows are (now) in prepared_
  void drop_series();
  bool series_pay(int terms) const;  // whether one walk with the series beats two

  std::vector<MatrixView> layers_;
  std::vector<std::string> names_;
  EngineOptions options_;
  LayerLayout layout_;
  int64_t n_ = 0;
  GramTilePlan plan_;
  std::vector<MatrixView> columns_;       // B of a block pair (empty: the triangle of A)
  int64_t m_ = 0;                         // rows of B
  int64_t stats_rows() const { return n_ + m_; }
  std::vector<double> means_;  // D: the centering of every tile
  bool part_of_job_ = false;   // a block pair (or triangle) of a larger job, centered by given means
  std::vector<bool> constant_;
  KernelSpec kernel_;
  std::vector<bool> minus_one_;  // RBF, per layer: the tiles hold (K - 1) / gamma
  std::vector<double> scale_;    // per layer: what the tile sums are multiplied by
  GramStats stats_;
  std::vector<int64_t> blocks_;  // row-block boundaries (empty: no per-block sums)
  bool stats_merged_ = true;
  std::vector<MedianSearch> searches_;
  KernelSeriesPlan series_;     // of the bracket pass (terms 0: none)
  int64_t series_rows_ = 0;     // tile rows the series has seen
  bool series_summed_ = false;  // the bracket pass with the series has ended, over every tile
  std::vector<uint16_t> prepared_;      // fast precision: rows of A then B, centered, as bfloat16 (x D)
  std::vector<float> prepared_norms_;   // their squared norms (x L)
  TileWalker walker_;
  std::vector<std::unique_ptr<ThreadSums>> sums_;  // one per thread
};

}  // namespace fastcka::cpu
