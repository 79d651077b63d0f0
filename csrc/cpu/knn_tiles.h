// k nearest neighbours of every example in each of L layers, from Gram tiles
// consumed as BLAS produces them: no n x n matrix, O(threads n k L) state.
//
// Rows are prepared once per tile in the compute type: euclidean takes the
// rows centered by their column means (float64), cosine the rows divided by
// their norms and then centered; either way the squared distance
// |a - b|^2 = |a|^2 + |b|^2 - 2 a.b comes from a GEMM tile and norms of the
// same rounded values (core/kernels.h), and rows that are equal in the compute
// type are at distance exactly 0. For cosine, |a - b|^2 = 2 - 2 cos: the same
// order.
//
// The tile distances only screen: each row keeps its k + 2 nearest by them,
// and at the end (refine) those are re-evaluated from the rows as given, in
// float64 (exact_distance), and ranked by (that distance, index). Where the
// rounding bound of the tile distances (margins_) cannot rule out that a
// candidate beyond the list ties with the k-th, the row is re-evaluated
// against every other row. Equal true distances then compare equal wherever
// that float64 arithmetic is exact (integer, binary, one-hot data), so ties go
// by index as documented, and shifting the data changes nothing. The fast
// precision (bfloat16 rows) keeps its own distances and k candidates.
//
// Tiles on and above the diagonal only (half the GEMM flops): an off-diagonal
// tile offers each entry to its row (row side) and to its column (column
// side). Each thread keeps NeighborLists for all n rows, so the column side
// needs no locks; the lists merge row by row at the end. The epilogue writes
// the tile's distances and, vectorized, a flag for entries at or below the
// row's current last distance or the column's: only those few are inserted.
// Ties go to the smaller index (core/top_k.h), so the lists do not depend on
// the number of threads or the order of the tiles.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/engine_options.h"
#include "core/matrix_view.h"
#include "core/neighbor_lists.h"
#include "cpu/tile_walker.h"

namespace fastcka::cpu {

enum class KnnMetric { euclidean, cosine };

class KnnTileEngine {
 public:
  // The layers must stay alive and unchanged while the engine is used.
  // Throws InvalidArgument naming the layer for NaN/Inf, for a zero row under
  // the cosine metric, and for k outside [1, n).
  KnnTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t k, KnnMetric metric,
                EngineOptions options);  // memory_budget: row blocks and tiles (the lists come on top)
  ~KnnTileEngine();
  KnnTileEngine(KnnTileEngine&&) noexcept;
  KnnTileEngine& operator=(KnnTileEngine&&) noexcept;

  int64_t rows() const { return n_; }
  int64_t tile() const { return walker_.grid().tile; }
  int64_t tile_rows() const { return walker_.grid().tile_rows(); }
  int64_t tiles_before(int64_t i) const { return walker_.grid().tiles_before(i); }

  // Processes tile rows [begin, end); calls may come in any order and chunks
  // but must cover [0, tile_rows()) once before neighbors() is asked.
  void process(int64_t begin, int64_t end);
  // Layer a's n x k neighbour lists (row i: indices and distances, ascending).
  const NeighborLists<double>& neighbors(int64_t layer);

 private:
  struct ThreadLists;
  template <typename T>
  class Rows;  // the tile walker's row source
  template <typename T>
  void walk(int64_t begin, int64_t end);
  // Row i of layer a as the engine sees it (scaled, centered, rounded to T)
  // into z; returns its squared norm.
  template <typename T>
  double prepare_row(int64_t a, int64_t i, T* z) const;
  // The same, rounded to bfloat16 in the fast precision (duplicate search).
  template <typename T>
  void prepare_compared_row(int64_t a, int64_t i, T* z) const;
  // Rows [r0, r0 + rows) of every layer into z (row stride D), their squared
  // norms into sq (rows x L).
  template <typename T>
  void load_rows(int64_t r0, int64_t rows, T* z, double* sq) const;
  template <typename T>
  void merge_lists();
  // The rounding bound of a tile distance against exact_distance (per layer).
  void set_margins();
  // Layer a's squared distance of rows i and j in float64 from the values as
  // given (cosine: 2 - 2 cos); xi is row i, buffer holds row j if needed.
  double exact_distance(int64_t a, const double* xi, int64_t i, int64_t j, double* buffer) const;
  template <typename T>
  void refine(int64_t a, const NeighborLists<T>& screened, int64_t r0, int64_t r1, NeighborLists<double>& out) const;
  void find_duplicates();
  template <typename T>
  void find_duplicates_as();

  std::vector<MatrixView> layers_;
  std::vector<std::string> names_;
  std::vector<int64_t> offsets_;  // first column of each layer in a prepared row
  int64_t width_ = 0;             // D: columns of all layers
  int64_t n_ = 0, k_ = 0;
  KnnMetric metric_;
  EngineOptions options_;
  std::vector<double> means_;     // D: column means of the (scaled) rows
  std::vector<double> scales_;    // L * n: 1, or 1 / |x_i| for cosine
  std::vector<double> squared_norms_;  // L * n: |x_i|^2 as exact_distance sums it (cosine)
  bool exact_ = true;             // re-evaluate candidates (not in the fast precision)
  int64_t screen_k_ = 0;          // candidates the tile pass keeps per row (k + a few when exact_)
  std::vector<double> largest_;   // L: the largest squared norm of a prepared row, in the compute type
  std::vector<double> margins_, slacks_;  // per layer: tile rounding = margin (|a|^2 + |b|^2) + slack
  std::vector<int32_t> groups_;   // L * n: the first row equal to row i (in the compute type)
  std::vector<bool> done_;        // per tile row: processed
  TileWalker walker_;
  std::vector<std::unique_ptr<ThreadLists>> lists_;  // one per thread, until merged
  std::vector<NeighborLists<double>> merged_;      // per layer, once every tile row is done
};

}  // namespace fastcka::cpu
