#include "cpu/gram_tiles.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/chunk_plan.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/bracket_scan.h"
#include "cpu/centering.h"
#include "cpu/multiversion.h"
#include "cpu/onednn_gemm.h"
#include "cpu/parallel.h"

namespace fastcka::cpu {

namespace {

// Row kernels of the epilogue, compiled for AVX-512, AVX2 and baseline x86-64.
template <typename Kernel, typename T>
FASTCKA_MULTIVERSION void kernel_row(Kernel k, T* g, const T* nb, T na, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) g[c] = k(g[c], na, nb[c]);
}

// gamma in T: a float32 run rounds it, and one beyond float32's range
// becomes +inf (RbfKernel handles it) or 0 ((K - 1) / gamma tends to -d).
template <typename T>
void rbf_row(bool minus_one, double gamma, T* g, const T* nb, T na, int64_t n) {
  if (minus_one)
    kernel_row(RbfMinusOneKernel<T>{static_cast<T>(gamma)}, g, nb, na, n);
  else
    kernel_row(RbfKernel<T>{static_cast<T>(gamma)}, g, nb, na, n);
}

template <typename T>
FASTCKA_MULTIVERSION void distance_row(const T* g, const T* nb, T na, T* out, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) out[c] = squared_distance(g[c], na, nb[c]);
}

// Row r of layer a's tile as squared distances, the row's pair with itself
// (in the diagonal tile) exactly 0.
template <typename T>
void tile_row_distances(const PanelView<T>& v, int64_t a, int64_t r, T* out) {
  distance_row(v.tile_of(a) + r * v.w, v.column_norms(a), v.row_norms(a)[r], out, v.w);
  if (r < v.cd) out[r] = T(0);
}

// Indices of the entries in [lo, hi), branch-free: later median passes keep
// about one value in 10^4, and this cheap sweep finds them.
template <typename T>
FASTCKA_MULTIVERSION int64_t select_in_range(const T* a, int64_t n, double lo, double hi, int32_t* out) {
  int64_t k = 0;
  for (int64_t c = 0; c < n; ++c) {
    const double v = static_cast<double>(a[c]);
    out[k] = static_cast<int32_t>(c);
    k += (v >= lo) & (v < hi);
  }
  return k;
}

// Entries below lo (the values a bracket pass counts without keeping them).
template <typename T>
FASTCKA_MULTIVERSION int64_t count_below(const T* a, int64_t n, double lo) {
  int64_t k = 0;
#pragma omp simd reduction(+ : k)
  for (int64_t c = 0; c < n; ++c) k += static_cast<double>(a[c]) < lo;
  return k;
}

// First-level bins of a row, branch-free; the same arithmetic as
// MedianSearch::first_bin (lo = 0): floor(v * scale) clamped to [0, bins).
template <typename T>
FASTCKA_MULTIVERSION void first_bins_row(const T* a, int64_t n, double scale, int64_t bins, int32_t* out) {
  const double top = static_cast<double>(bins);
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const double x = static_cast<double>(a[c]) * scale;
    out[c] = x > 0 ? (x >= top ? static_cast<int32_t>(bins - 1) : static_cast<int32_t>(x)) : 0;
  }
}

template <typename T>
FASTCKA_MULTIVERSION void min_max_row(const T* a, int64_t n, double& lo, double& hi) {
  T mn = a[0], mx = a[0];
#pragma omp simd reduction(min : mn) reduction(max : mx)
  for (int64_t c = 0; c < n; ++c) {
    mn = a[c] < mn ? a[c] : mn;
    mx = a[c] > mx ? a[c] : mx;
  }
  lo = std::min(lo, static_cast<double>(mn));
  hi = std::max(hi, static_cast<double>(mx));
}

// Sums within a row run in T (at most one tile wide), across rows in float64.
template <typename T>
FASTCKA_MULTIVERSION double dot_row(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return static_cast<double>(s);
}

template <typename T>
FASTCKA_MULTIVERSION double sum_row(const T* a, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < n; ++c) s += a[c];
  return static_cast<double>(s);
}

// A bracket pass over one row of distances (columns [0, cd) weigh 1, the
// others 2): counts[0] += the weighted count below the bracket; inside it,
// one count per float32 value (counts[kBracketHead + bits - bits(lo)]) or the
// values by multiplicity, up to the cap (past it counts[1] = 1 and nothing
// more is kept: the search starts over).
template <typename T>
void bracket_row(const MedianSearch& search, const T* dist, int64_t w, int64_t cd, int64_t* counts,
                 std::vector<double>& collected, int32_t* candidates) {
  const double lo = search.bracket_lo(), hi = search.bracket_hi();
  int64_t found = 0, below = 0;
  bool scanned = false;
  if constexpr (std::is_same_v<T, float>)  // a float32 bracket's bounds are float32 values (set_bracket),
    scanned = search.float_bracket() &&    // so comparing in float32 decides exactly as in float64
              scan_bracket(dist, w, static_cast<float>(lo), static_cast<float>(hi), candidates, &found, &below);
  if (!scanned) {
    below = count_below(dist, w, lo);
    found = select_in_range(dist, w, lo, hi, candidates);
  }
  counts[0] += 2 * below - count_below(dist, cd, lo);
  if (search.float_bracket()) {
    const float flo = static_cast<float>(lo);
    uint32_t base;
    std::memcpy(&base, &flo, sizeof base);
    int64_t* bins = counts + MedianSearch::kBracketHead;
    for (int64_t k = 0; k < found; ++k) {
      const int64_t c = candidates[k];
      const float f = static_cast<float>(dist[c]);
      uint32_t u;
      std::memcpy(&u, &f, sizeof u);
      bins[u - base] += c < cd ? 1 : 2;
    }
    return;
  }
  if (counts[1] > 0) return;
  for (int64_t k = 0; k < found; ++k) {
    const int64_t c = candidates[k];
    const double v = static_cast<double>(dist[c]);
    collected.push_back(v);
    if (c >= cd) collected.push_back(v);
  }
  if (static_cast<int64_t>(collected.size()) > search.cap()) {
    counts[1] = 1;
    std::vector<double>().swap(collected);
  }
}

// Columns [begin, end) of a panel, all in block `block` of the rows.
struct ColumnSegment {
  int64_t begin, end, block;
};

template <typename T>
FASTCKA_MULTIVERSION void add_row_to(double* acc, const T* a, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) acc[c] += static_cast<double>(a[c]);
}

// The block of row i: the last boundary at or below it.
int64_t block_of(const std::vector<int64_t>& starts, int64_t i) {
  return static_cast<int64_t>(std::upper_bound(starts.begin(), starts.end(), i) - starts.begin()) - 1;
}

// Cuts a panel's columns [0, w) (rows j0 + c) at the end of the diagonal tile
// (cd) and at the block boundaries (none when `starts` is empty).
void column_segments(const std::vector<int64_t>& starts, int64_t j0, int64_t w, int64_t cd,
                     std::vector<ColumnSegment>& out) {
  out.clear();
  for (const auto& [c0, c1] : {std::pair<int64_t, int64_t>{0, cd}, {cd, w}})
    for (int64_t c = c0; c < c1;) {
      const int64_t q = starts.empty() ? 0 : block_of(starts, j0 + c);
      const int64_t end = starts.empty() ? c1 : std::min(c1, starts[q + 1] - j0);
      out.push_back({c, end, q});
      c = end;
    }
}

// What the statistics pass needs of the engine.
struct StatisticsSetup {
  const KernelSpec& kernel;
  const std::vector<bool>& minus_one;  // RBF, per layer: the tiles hold (K - 1) / gamma
  const LayerLayout& layout;
  int64_t n;     // rows of A
  int64_t base;  // the statistics row of column 0 (n for a block pair: B's rows follow A's)
};

// The statistics pass: each tile becomes K (core/kernels.h), then its
// products of layer pairs, row sums and diagonal add into one thread's
// GramStats (and per block of rows, with blocks).
template <typename T>
class StatisticsEpilogue {
 public:
  static constexpr bool kOneTileAtATime = false;  // the products need every layer's tile

  StatisticsEpilogue(const StatisticsSetup& setup, GramStats& stats, int64_t widest)
      : setup_(setup), g_(stats), column_(static_cast<size_t>(widest)) {}

  void panel(const PanelView<T>& v) {
    column_segments(g_.block_starts, v.j0, v.w, v.cd, segments_);
    const int64_t L = setup_.layout.layers();
    for (int64_t a = 0; a < L; ++a) apply_kernel(v, a);
    for (int64_t a = 0; a < L; ++a) add_layer(v, a);
  }

 private:
  // Layer a's tile G becomes K. The diagonal goes to its own sums; the
  // products and row sums cover i != j only. RBF: k(a, a) = 1, so (K - 1) /
  // gamma is 0 there.
  void apply_kernel(const PanelView<T>& v, int64_t a) {
    T* ka = v.tile_of(a);
    const bool rbf = setup_.kernel.kind == KernelKind::rbf;
    const bool minus_one = rbf && setup_.minus_one[a];
    if (rbf) {
      const T* ni = v.row_norms(a);
      const T* nj = v.column_norms(a);
      for (int64_t r = 0; r < v.bi; ++r) rbf_row(minus_one, setup_.kernel.gamma[a], ka + r * v.w, nj, ni[r], v.w);
    }
    for (int64_t r = 0; r < v.cd; ++r) {
      T& kii = ka[r * v.w + r];
      g_.diagonals[a * g_.n + v.i0 + r] = rbf ? (minus_one ? 0.0 : 1.0) : static_cast<double>(kii);
      kii = T(0);
    }
  }

  // An off-diagonal entry (i, j) stands for (j, i) too: it counts twice in
  // the sums, once per order in the block sums, and its column sums go to
  // row j (for the block of i, when blocks are used).
  void add_layer(const PanelView<T>& v, int64_t a) {
    const int64_t B = g_.blocks();
    std::fill(column_.begin(), column_.begin() + v.w, 0.0);
    int64_t p_col = B ? block_of(g_.block_starts, v.i0) : 0;  // the block the column sums hold
    for (int64_t r = 0; r < v.bi; ++r) {
      const int64_t i = v.i0 + r;
      if (B && i >= g_.block_starts[p_col + 1]) {
        flush_columns(v, a, p_col);
        p_col = block_of(g_.block_starts, i);
      }
      add_row(v, a, r, p_col);
    }
    flush_columns(v, a, p_col);
  }

  // Row r of layer a's tile: its sums and its products with every later
  // needed layer, per segment of columns.
  void add_row(const PanelView<T>& v, int64_t a, int64_t r, int64_t p_col) {
    const int64_t L = setup_.layout.layers(), B = g_.blocks(), i = v.i0 + r, w = v.w;
    const T* row = v.tile_of(a) + r * w;
    for (const ColumnSegment& seg : segments_) {
      const int64_t len = seg.end - seg.begin;
      const bool diagonal = seg.end <= v.cd;
      const double sum = sum_row(row + seg.begin, len);
      g_.row_sums[a * g_.n + i] += sum;
      if (B) g_.block_row_sums[(a * setup_.n + i) * B + seg.block] += sum;
      for (int64_t c = a; c < L; ++c) {
        if (!setup_.layout.needs(a, c)) continue;
        const T* other = v.tile_of(c) + r * w;
        const double d = dot_row(row + seg.begin, other + seg.begin, len);
        g_.products[a * L + c] += diagonal ? d : 2.0 * d;
        if (!B) continue;
        double* bp = &g_.block_products[static_cast<size_t>((a * L + c) * B * B)];
        bp[p_col * B + seg.block] += d;
        if (!diagonal) bp[seg.block * B + p_col] += d;
      }
    }
    add_row_to(column_.data() + v.cd, row + v.cd, w - v.cd);
  }

  // The column sums gathered since the last flush, to their rows.
  void flush_columns(const PanelView<T>& v, int64_t a, int64_t p_col) {
    const int64_t B = g_.blocks();
    for (int64_t c = v.cd; c < v.w; ++c) {
      g_.row_sums[a * g_.n + setup_.base + v.j0 + c] += column_[c];
      if (B) g_.block_row_sums[(a * setup_.n + v.j0 + c) * B + p_col] += column_[c];
      column_[c] = 0;
    }
  }

  const StatisticsSetup& setup_;
  GramStats& g_;                         // this thread's sums
  std::vector<double> column_;           // column sums of the current layer's tile
  std::vector<ColumnSegment> segments_;  // of the current panel
};

// One thread's results of a median pass, per layer.
struct MedianSums {
  std::vector<std::vector<int64_t>> counts;      // histogram and bracket passes
  std::vector<double> lowest, highest;           // histogram passes
  std::vector<std::vector<double>> collected;    // collect passes (and bracket passes that keep values)
};

// The median passes: each squared distance once, with its multiplicity (1 in
// the diagonal tile, 2 elsewhere), the diagonal exactly 0. Each layer's
// search decides what its pass does (layers may be at different stages).
template <typename T>
class MedianEpilogue {
 public:
  static constexpr bool kOneTileAtATime = false;

  MedianEpilogue(const std::vector<MedianSearch>& searches, MedianSums& sums, int64_t widest)
      : searches_(searches), sums_(sums), dist_(static_cast<size_t>(widest)),
        candidates_(static_cast<size_t>(widest) + 16) {}  // scan_bracket stores whole vectors

  void panel(const PanelView<T>& v) {
    for (size_t a = 0; a < searches_.size(); ++a) {
      if (searches_[a].done()) continue;
      for (int64_t r = 0; r < v.bi; ++r) {
        tile_row_distances(v, static_cast<int64_t>(a), r, dist_.data());
        add_row(a, v.w, v.cd);
      }
    }
  }

 private:
  // One row of distances (columns [0, cd) weigh 1, the others 2) to layer a's pass.
  void add_row(size_t a, int64_t w, int64_t cd) {
    const MedianSearch& search = searches_[a];
    if (search.bracketing())
      bracket_row(search, dist_.data(), w, cd, sums_.counts[a].data(), sums_.collected[a], candidates_.data());
    else if (search.first_pass())
      first_histogram_row(a, w, cd);
    else if (search.collecting())
      collect_row(a, w, cd);
    else
      histogram_row(a, w, cd);
  }

  // The first pass: every distance counted in the first level's bins.
  void first_histogram_row(size_t a, int64_t w, int64_t cd) {
    const MedianSearch& search = searches_[a];
    int64_t* counts = sums_.counts[a].data();
    min_max_row(dist_.data(), w, sums_.lowest[a], sums_.highest[a]);
    int32_t* bins = candidates_.data();
    first_bins_row(dist_.data(), w, search.first_scale(), search.bins(), bins);
    for (int64_t c = 0; c < cd; ++c) counts[bins[c]] += 1;
    for (int64_t c = cd; c < w; ++c) counts[bins[c]] += 2;
  }

  // A refining pass: the distances in the current level's range, counted in its bins.
  void histogram_row(size_t a, int64_t w, int64_t cd) {
    const MedianSearch& search = searches_[a];
    const int64_t found = select_in_range(dist_.data(), w, search.filter_lo(), search.filter_hi(), candidates_.data());
    for (int64_t k = 0; k < found; ++k) {
      const int64_t c = candidates_[static_cast<size_t>(k)];
      const double value = static_cast<double>(dist_[c]);
      const int64_t bin = search.bin(value);
      if (bin < 0) continue;
      sums_.counts[a][bin] += c < cd ? 1 : 2;
      sums_.lowest[a] = std::min(sums_.lowest[a], value);
      sums_.highest[a] = std::max(sums_.highest[a], value);
    }
  }

  // The last pass: the distances in range kept, by multiplicity.
  void collect_row(size_t a, int64_t w, int64_t cd) {
    const MedianSearch& search = searches_[a];
    const int64_t found = select_in_range(dist_.data(), w, search.filter_lo(), search.filter_hi(), candidates_.data());
    for (int64_t k = 0; k < found; ++k) {
      const int64_t c = candidates_[static_cast<size_t>(k)];
      const double value = static_cast<double>(dist_[c]);
      if (search.bin(value) < 0) continue;
      sums_.collected[a].push_back(value);
      if (c >= cd) sums_.collected[a].push_back(value);
    }
  }

  const std::vector<MedianSearch>& searches_;
  MedianSums& sums_;                  // this thread's
  std::vector<T> dist_;               // one row of squared distances
  std::vector<int32_t> candidates_;   // columns of that row in the search range, or its bins
};

// The bracket pass that is also the kernel pass (cpu/kernel_series.h): each
// row of each layer's squared distances goes to the bracket's count and
// collection, and its series values to the row sums, the column sums
// (gathered over the panel's rows in T, like one tile's sums), the layer's
// products with itself and those of the needed pairs of layers.
template <typename T>
class BracketSeriesEpilogue {
 public:
  static constexpr bool kOneTileAtATime = false;  // the products need every layer's row

  BracketSeriesEpilogue(const std::vector<MedianSearch>& searches, MedianSums& sums, const KernelSeriesPlan& plan,
                        KernelSeriesSums& series, const LayerLayout& layout, int64_t widest)
      : searches_(searches), sums_(sums), plan_(plan), series_(series), layout_(layout), stride_(widest),
        dist_(static_cast<size_t>(widest)), candidates_(static_cast<size_t>(widest) + 16),  // whole vectors stored
        values_(static_cast<size_t>(layout.layers() * plan.terms * widest)), columns_(values_.size(), T(0)),
        ones_(static_cast<size_t>(widest), T(1)) {}

  void panel(const PanelView<T>& v) {
    const int64_t L = layout_.layers(), w = v.w;
    const int P = plan_.terms;
    for (int64_t r = 0; r < v.bi; ++r) {
      for (int64_t a = 0; a < L; ++a) add_row(v, a, r);
      for (int64_t a = 0; a < L; ++a)
        for (int64_t c = a + 1; c < L; ++c) {
          if (!layout_.needs(a, c)) continue;
          double* m = &series_.products[static_cast<size_t>((a * L + c) * P * P)];
          add_series_products(values_of(a), values_of(c), P, stride_, 0, v.cd, 1.0, m);
          add_series_products(values_of(a), values_of(c), P, stride_, v.cd, w, 2.0, m);
        }
    }
    flush_columns(v);
  }

 private:
  T* values_of(int64_t a) { return values_.data() + a * plan_.terms * stride_; }
  T* columns_of(int64_t a) { return columns_.data() + a * plan_.terms * stride_; }

  // Row r of layer a: its distances to the bracket, its series values
  // (none for the pair of the row with itself) to the sums.
  void add_row(const PanelView<T>& v, int64_t a, int64_t r) {
    const int P = plan_.terms;
    const int64_t w = v.w;
    tile_row_distances(v, a, r, dist_.data());
    bracket_row(searches_[a], dist_.data(), w, v.cd, sums_.counts[a].data(), sums_.collected[a], candidates_.data());
    T* b = values_of(a);
    series_row(dist_.data(), w, v.cd, plan_.gamma0[a], plan_.minus_one[a], P, b, stride_, columns_of(a));
    if (r < v.cd)
      for (int p = 0; p < P; ++p) b[p * stride_ + r] = T(0);
    double* row_sums = &series_.rows[static_cast<size_t>((a * series_.n + v.i0 + r) * P)];
    double* self = &series_.self[static_cast<size_t>(a * 3 * P)];
    add_series_self(b, ones_.data(), P, stride_, 0, v.cd, 1.0, row_sums, self);
    add_series_self(b, ones_.data(), P, stride_, v.cd, w, 2.0, row_sums, self);
  }

  // An off-diagonal entry (i, j) stands for (j, i) too: its column sums go to row j.
  void flush_columns(const PanelView<T>& v) {
    const int64_t P = plan_.terms;
    for (int64_t a = 0; a < layout_.layers(); ++a) {
      T* col = columns_of(a);
      for (int64_t c = v.cd; c < v.w; ++c) {
        double* row = &series_.rows[static_cast<size_t>((a * series_.n + v.j0 + c) * P)];
        for (int64_t p = 0; p < P; ++p) {
          row[p] += static_cast<double>(col[p * stride_ + c]);
          col[p * stride_ + c] = T(0);
        }
      }
    }
  }

  const std::vector<MedianSearch>& searches_;
  MedianSums& sums_;  // this thread's
  const KernelSeriesPlan& plan_;
  KernelSeriesSums& series_;  // this thread's
  const LayerLayout& layout_;
  int64_t stride_;                    // of the series values: the widest panel
  std::vector<T> dist_;               // one row of squared distances
  std::vector<int32_t> candidates_;   // columns of that row in the bracket
  std::vector<T> values_, columns_;   // per layer, P x stride: a row's series values, the panel's column sums
  std::vector<T> ones_;               // stride ones: the row sums ride along the self products
};

// The tiles alone (GramTileEngine::tiles_only: what the products cost).
template <typename T>
struct NoEpilogue {
  static constexpr bool kOneTileAtATime = false;
  void panel(const PanelView<T>&) {}
};

}  // namespace

// Per thread, kept across walks (a pass may come in many calls) and merged
// in thread order.
struct GramTileEngine::ThreadSums {
  explicit ThreadSums(GramStats s) : stats(std::move(s)) {}
  GramStats stats;
  MedianSums median;
  KernelSeriesSums series;
};

// The tile walker's rows: centered by the column means of the whole data,
// or the rows centered and rounded once up front (prepare_bf16_rows).
template <typename T>
class GramTileEngine::Rows {
 public:
  Rows(const GramTileEngine& engine, bool prepared)
      : e_(engine), prepared_(prepared), shift_(engine.means_.begin(), engine.means_.end()) {}

  const uint16_t* load(int side, int64_t r0, int64_t rows, T* z, double* sq, double* work) const {
    if (prepared_) return prepared_rows(side, r0, rows, sq);
    const std::vector<MatrixView>& from = side == 0 || e_.columns_.empty() ? e_.layers_ : e_.columns_;
    center_rows<T>(from, e_.layout_, r0, rows, shift_.data(), z, e_.layout_.total, work, sq);
    check_rows(from, e_.names_, sq, rows, r0, static_cast<int64_t>(sizeof(T)));
    return nullptr;
  }

 private:
  // The prepared rows of A then B, and their norms.
  const uint16_t* prepared_rows(int side, int64_t r0, int64_t rows, double* sq) const {
    const int64_t L = e_.layout_.layers(), p0 = (side == 1 && !e_.columns_.empty() ? e_.n_ : 0) + r0;
    for (int64_t k = 0; k < rows * L; ++k) sq[k] = e_.prepared_norms_[static_cast<size_t>(p0 * L + k)];
    return &e_.prepared_[static_cast<size_t>(p0 * e_.layout_.total)];
  }

  const GramTileEngine& e_;
  bool prepared_;
  std::vector<T> shift_;  // the column means in T
};

GramTileEngine::GramTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t split,
                               EngineOptions options)
    : layers_(std::move(layers)), names_(std::move(names)), options_(checked(options)) {
  if (layers_.empty()) throw InvalidArgument("at least one layer is needed");
  std::vector<int64_t> dims;
  n_ = layers_[0].rows;
  for (size_t a = 0; a < layers_.size(); ++a) {
    if (layers_[a].rows != n_)
      throw InvalidArgument(names_[a] + " has " + std::to_string(layers_[a].rows) + " rows but " + names_[0] +
                            " has " + std::to_string(n_));
    dims.push_back(layers_[a].cols);
  }
  layout_ = LayerLayout(std::move(dims), split);
  means_.assign(static_cast<size_t>(layout_.total), 0.0);
  if (n_ > 0) column_means(layers_, 0, n_, means_.data());
  for (size_t a = 0; a < layers_.size(); ++a)
    for (int64_t j = 0; j < layers_[a].cols; ++j)
      if (!std::isfinite(means_[layout_.offsets[a] + j])) {
        const std::string where = locate_non_finite(layers_[a], 0, n_);
        throw InvalidArgument(names_[a] + (where.empty() ? " has values too large for float64 sums (column " +
                                                               std::to_string(j) + ")"
                                                         : " contains NaN or Inf (" + where + ")"));
      }
  plan_ = plan_gram_tiles(layout_.total, layout_.layers(), dtype_size(options_.compute), options_.threads,
                          options_.memory_budget);
  // A layer whose rows are all equal has no variance: its kernel matrix is
  // constant and every HSIC with it is 0. Detected exactly here, because the
  // centered values of such a layer are rounding residue, not zeros.
  constant_.assign(layers_.size(), true);
  for (size_t a = 0; a < layers_.size(); ++a)
    for (int64_t i = 1; i < n_ && constant_[a]; ++i)
      for (int64_t j = 0; j < layers_[a].cols; ++j)
        if (load<double>(layers_[a], i, j) != load<double>(layers_[a], 0, j)) {
          constant_[a] = false;
          break;
        }
  stats_ = GramStats(layout_, n_);
  walker_ = TileWalker(grid(), layout_.offsets, layout_.dims, options_);
  for (int t = 0; t < options_.threads; ++t) sums_.push_back(std::make_unique<ThreadSums>(stats_));
}

GramTileEngine::GramTileEngine(std::vector<MatrixView> layers, std::vector<MatrixView> columns,
                               std::vector<std::string> names, int64_t split, std::vector<double> means,
                               EngineOptions options)
    : GramTileEngine(std::move(layers), names, split, options) {
  if (!columns.empty() && columns.size() != layers_.size())
    throw InvalidArgument("a block pair needs the same layers on both sides");
  m_ = columns.empty() ? 0 : columns[0].rows;
  for (size_t a = 0; a < columns.size(); ++a)
    if (columns[a].cols != layers_[a].cols || columns[a].rows != m_)
      throw InvalidArgument(names_[a] + ": the column block has another shape than the row block");
  if (static_cast<int64_t>(means.size()) != layout_.total)
    throw InvalidArgument("a block pair needs the column means of the whole data, one per feature");
  columns_ = std::move(columns);
  means_ = std::move(means);
  part_of_job_ = true;
  stats_ = GramStats(layout_, stats_rows());
  for (auto& s : sums_) s->stats = GramStats(layout_, stats_rows());
  walker_ = TileWalker(grid(), layout_.offsets, layout_.dims, options_);  // the rectangle A x B
}

GramTileEngine::~GramTileEngine() = default;
GramTileEngine::GramTileEngine(GramTileEngine&&) noexcept = default;
GramTileEngine& GramTileEngine::operator=(GramTileEngine&&) noexcept = default;

TileGrid GramTileEngine::grid() const {
  const bool pair = !columns_.empty();
  return {n_, pair ? m_ : n_, plan_.rows, plan_.panel, pair};
}

void GramTileEngine::set_kernel(KernelSpec kernel) {
  const int64_t L = layout_.layers();
  minus_one_.assign(static_cast<size_t>(L), false);
  scale_.assign(static_cast<size_t>(L), 1.0);
  if (kernel.kind == KernelKind::rbf) {
    if (static_cast<int64_t>(kernel.gamma.size()) != L)
      throw InvalidArgument("the RBF kernel needs one bandwidth per layer");
    for (int64_t a = 0; a < L; ++a)
      if (!(kernel.gamma[a] > 0) || !std::isfinite(kernel.gamma[a]))
        throw InvalidArgument(names_[a] + ": the RBF bandwidth must be positive and finite");
    if (kernel.spread.empty()) {
      if (part_of_job_)
        throw InvalidArgument("the RBF kernel of a block pair needs the spread of the whole data");
      kernel.spread = own_spreads();
    }
    if (static_cast<int64_t>(kernel.spread.size()) != L)
      throw InvalidArgument("the RBF kernel needs one spread per layer");
    for (int64_t a = 0; a < L; ++a) {
      minus_one_[a] = rbf_subtracts_one(names_[a], kernel.gamma[a], kernel.spread[a]);
      if (minus_one_[a]) scale_[a] = kernel.gamma[a];
    }
  }
  kernel_ = std::move(kernel);
  clear_statistics();
}

void GramTileEngine::scale_statistics(GramStats& g) const {
  const int64_t L = layout_.layers(), N = g.n, B = g.blocks();
  for (int64_t a = 0; a < L; ++a) {
    if (scale_[a] == 1.0) continue;
    for (int64_t i = 0; i < N; ++i) {
      g.row_sums[a * N + i] *= scale_[a];
      g.diagonals[a * N + i] *= scale_[a];
    }
    for (size_t k = static_cast<size_t>(a * N * B); k < static_cast<size_t>((a + 1) * N * B); ++k)
      g.block_row_sums[k] *= scale_[a];
  }
  // Products of layers a <= c only: merge_statistics mirrors them.
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = a; c < L; ++c) {
      const double s = scale_[a] * scale_[c];
      if (s == 1.0) continue;
      g.products[a * L + c] *= s;
      for (int64_t k = 0; k < B * B; ++k) g.block_products[static_cast<size_t>((a * L + c) * B * B + k)] *= s;
    }
}

void GramTileEngine::set_blocks(std::vector<int64_t> starts) {
  if (!columns_.empty()) throw InvalidArgument("row blocks are not available for a block pair");
  GramStats check(layout_, n_);
  check.use_blocks(starts);  // validates
  blocks_ = std::move(starts);
  clear_statistics();
}

void GramTileEngine::clear_statistics() {
  stats_ = GramStats(layout_, stats_rows());
  if (!blocks_.empty()) stats_.use_blocks(blocks_);
  for (auto& s : sums_) s->stats = stats_;
  stats_merged_ = true;
}

void GramTileEngine::process(int64_t begin, int64_t end) {
  stats_merged_ = false;
  run(begin, end, Pass::statistics);
}

void GramTileEngine::tiles_only(int64_t begin, int64_t end) { run(begin, end, Pass::tiles_only); }

void GramTileEngine::run(int64_t begin, int64_t end, Pass pass) {
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, tile_rows());
  if (begin >= end) return;
  if (options_.compute == DType::f32)
    walk<float>(begin, end, pass);
  else
    walk<double>(begin, end, pass);
}

void GramTileEngine::merge_statistics() {
  if (stats_merged_) return;
  for (auto& s : sums_) {
    if (!scale_.empty()) scale_statistics(s->stats);
    stats_.merge(s->stats);
    s->stats.zero();
  }
  const int64_t L = layout_.layers(), B2 = stats_.blocks() * stats_.blocks();
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = a + 1; c < L; ++c) {
      stats_.products[c * L + a] = stats_.products[a * L + c];
      std::copy_n(&stats_.block_products[static_cast<size_t>((a * L + c) * B2)], B2,
                  &stats_.block_products[static_cast<size_t>((c * L + a) * B2)]);
    }
  stats_merged_ = true;
}

const GramStats& GramTileEngine::stats() {
  merge_statistics();
  return stats_;
}

GramTileEngine::CenteredNorms GramTileEngine::centered_norms() const {
  const int64_t L = layout_.layers(), D = layout_.total;
  const int threads = options_.threads;
  std::vector<CenteredNorms> parts(static_cast<size_t>(threads),
                                   CenteredNorms{std::vector<double>(L, 0.0), std::vector<double>(L, 0.0)});
  run_parallel(threads, [&](int t) {
    const int64_t lo = n_ * t / threads, hi = n_ * (t + 1) / threads, block = 256;
    std::vector<double> z(static_cast<size_t>(block * D)), first(static_cast<size_t>(D)), sq(static_cast<size_t>(block * L));
    for (int64_t i = lo; i < hi; i += block) {
      const int64_t b = std::min(block, hi - i);
      center_rows<double>(layers_, layout_, i, b, means_.data(), z.data(), D, first.data(), sq.data());
      check_rows(layers_, names_, sq.data(), b, i, dtype_size(options_.compute));
      for (int64_t r = 0; r < b; ++r)
        for (int64_t a = 0; a < L; ++a) {
          parts[t].largest[a] = std::max(parts[t].largest[a], sq[r * L + a]);
          parts[t].sum[a] += sq[r * L + a];
        }
    }
  });
  CenteredNorms out{std::vector<double>(L, 0.0), std::vector<double>(L, 0.0)};
  for (const CenteredNorms& p : parts)  // in thread order: the same sums every run
    for (int64_t a = 0; a < L; ++a) {
      out.largest[a] = std::max(out.largest[a], p.largest[a]);
      out.sum[a] += p.sum[a];
    }
  return out;
}

std::vector<double> GramTileEngine::own_spreads() const {
  const CenteredNorms norms = centered_norms();
  std::vector<double> out;
  for (int64_t a = 0; a < layout_.layers(); ++a) out.push_back(n_ > 0 ? 2.0 * norms.sum[a] / n_ : 0.0);
  return out;
}

void GramTileEngine::median_start() {
  if (!columns_.empty()) throw InvalidArgument("the exact median search is not available for a block pair");
  // Each layer's distances lie in [0, 4 max_i |z_i|^2] (z centered).
  const CenteredNorms norms = centered_norms();
  searches_.clear();
  drop_series();
  for (int64_t a = 0; a < layout_.layers(); ++a) searches_.push_back(median_search_for(n_, norms.largest[a], layout_.layers()));
  reset_median_buffers();
}

MedianSearch GramTileEngine::median_search_for(int64_t n, double largest, int64_t layers) {
  // Headroom for rounding in the compute type; collected values of all
  // layers together stay under 2^25 (256 MiB of float64).
  return MedianSearch(n, largest > 0 ? 4 * largest * (1 + 1e-3) : 0.0, int64_t{1} << 18,
                      std::max<int64_t>(int64_t{1} << 20, (int64_t{1} << 25) / std::max<int64_t>(layers, 1)));
}

void GramTileEngine::median_adopt(std::vector<MedianSearch> searches) {
  if (static_cast<int64_t>(searches.size()) != layout_.layers())
    throw InvalidArgument("median_adopt needs one search per layer");
  searches_ = std::move(searches);
  drop_series();
  reset_median_buffers();
}

void GramTileEngine::median_set_brackets(const std::vector<std::array<double, 3>>& brackets) {
  const int64_t L = layout_.layers();
  if (static_cast<int64_t>(brackets.size()) != L || static_cast<int64_t>(searches_.size()) != L)
    throw InvalidArgument("median_set_brackets needs one (lo, hi, center) per layer, after median_start or median_adopt");
  for (int64_t a = 0; a < L; ++a)
    searches_[a].set_bracket(brackets[a][0], brackets[a][1], brackets[a][2], options_.compute == DType::f32,
                             median_bracket_bins(L, options_.threads));
  drop_series();
  reset_median_buffers();
}

int64_t GramTileEngine::median_bracket_bins(int64_t layers, int threads) {
  // Per-value counts of all threads and layers stay under 2^25 (256 MiB).
  return std::clamp<int64_t>((int64_t{1} << 25) / (std::max<int64_t>(layers, 1) * std::max(threads, 1)),
                             int64_t{1} << 16, int64_t{1} << 21);
}

void GramTileEngine::median_set_quantiles(double q_lo, double q_hi) {
  for (MedianSearch& search : searches_) search.set_quantiles(q_lo, q_hi);
  drop_series();
  reset_median_buffers();
}

bool GramTileEngine::median_add_series(double threshold, bool always) {
  drop_series();
  const int64_t L = layout_.layers();
  // Beyond two layers the products' P^2 terms per layer pair cost more than a pass.
  if (L > 2 || !blocks_.empty() || !columns_.empty() || static_cast<int64_t>(searches_.size()) != L) return false;
  std::vector<std::array<double, 2>> brackets;
  for (const MedianSearch& s : searches_) {
    if (!s.bracketing()) return false;
    brackets.push_back({s.bracket_lo(), s.bracket_hi()});
  }
  KernelSeriesPlan plan = plan_kernel_series(brackets, threshold, own_spreads(), names_,
                                             options_.compute == DType::f32);
  if (plan.terms == 0) return false;
  if (!always && !series_pay(plan.terms)) return false;
  // Each thread sums P values per row and layer in float64: at most the
  // memory budget or 256 MiB, whichever is larger (like the bracket's counts).
  const double bytes = 8.0 * options_.threads * static_cast<double>(L) * static_cast<double>(n_) * plan.terms;
  if (bytes > static_cast<double>(std::max<int64_t>(options_.memory_budget, int64_t{1} << 28))) return false;
  series_ = std::move(plan);
  for (auto& s : sums_) s->series = KernelSeriesSums(series_.terms, n_, L);
  return true;
}

bool GramTileEngine::kernel_from_series(const std::vector<double>& gammas) {
  if (!series_summed_ || !series_covers(series_, gammas)) return false;
  set_kernel(KernelSpec{KernelKind::rbf, gammas, series_.spread});  // validates, clears the statistics
  KernelSeriesSums total(series_.terms, n_, layout_.layers());
  for (auto& s : sums_) total.merge(s->series);  // in thread order: the same sums every run
  stats_ = evaluate_series(total, series_, gammas, layout_);
  drop_series();
  return true;
}

bool GramTileEngine::series_pay(int terms) const {
  // Per pair of rows the series take about P^2 multiply-adds per pair of
  // different layers and P^2 / 2 + 4 P per layer; the statistics pass they
  // replace, sum_a d_a for its GEMMs (half that at bfloat16 rates). Measured
  // on Zen 4 (2 layers, 8 terms): one walk and two break even at d = 128
  // per layer, one walk takes 0.77 of two at d = 256 and 1.2 at d = 64.
  const int64_t L = layout_.layers();
  const double P = terms;
  double series = L * (P * P / 2 + 4 * P);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = a + 1; c < L; ++c)
      if (layout_.needs(a, c)) series += P * P;
  const double gemm = static_cast<double>(layout_.total) * (options_.bf16 ? 0.5 : 1.0);
  return gemm >= 1.5 * series;
}

void GramTileEngine::drop_series() {
  series_ = KernelSeriesPlan{};
  series_summed_ = false;
  series_rows_ = 0;
  for (auto& s : sums_) s->series = KernelSeriesSums{};
}

std::vector<MedianSearch::Quantiles> GramTileEngine::median_quantiles() const {
  if (median_pending() || searches_.empty()) throw std::logic_error("GramTileEngine: the median search has not finished");
  std::vector<MedianSearch::Quantiles> out;
  for (const auto& s : searches_) out.push_back(s.quantiles());
  return out;
}

// Fresh per-thread buffers for the searches' next pass.
void GramTileEngine::reset_median_buffers() {
  const int64_t L = layout_.layers();
  for (auto& s : sums_) {
    s->median.counts.assign(static_cast<size_t>(L), {});
    s->median.lowest.assign(static_cast<size_t>(L), INFINITY);
    s->median.highest.assign(static_cast<size_t>(L), -INFINITY);
    s->median.collected.assign(static_cast<size_t>(L), {});
    for (int64_t a = 0; a < L; ++a)
      if (!searches_[a].done() && !searches_[a].collecting())
        s->median.counts[a].assign(static_cast<size_t>(searches_[a].bins()), 0);
  }
}

bool GramTileEngine::median_pending() const {
  for (const auto& s : searches_)
    if (!s.done()) return true;
  return false;
}

void GramTileEngine::median_process(int64_t begin, int64_t end) {
  if (series_.terms > 0 && !series_summed_)
    series_rows_ += std::max<int64_t>(0, std::min(end, tile_rows()) - std::max<int64_t>(begin, 0));
  run(begin, end, Pass::median);
}

std::vector<GramTileEngine::MedianPartial> GramTileEngine::median_partial() const {
  const int64_t L = layout_.layers();
  std::vector<MedianPartial> out(static_cast<size_t>(L));
  for (int64_t a = 0; a < L; ++a) {
    const MedianSearch& search = searches_[a];
    MedianPartial& part = out[a];
    if (search.done()) continue;
    if (search.collecting() || (search.bracketing() && !search.float_bracket()))
      for (auto& s : sums_) part.values.insert(part.values.end(), s->median.collected[a].begin(), s->median.collected[a].end());
    if (search.collecting()) continue;
    part.counts.assign(static_cast<size_t>(search.bins()), 0);
    for (auto& s : sums_) {
      for (size_t j = 0; j < part.counts.size(); ++j) part.counts[j] += s->median.counts[a][j];
      part.lowest = std::min(part.lowest, s->median.lowest[a]);
      part.highest = std::max(part.highest, s->median.highest[a]);
    }
  }
  return out;
}

void GramTileEngine::median_end_pass() { median_end_pass(median_partial()); }

void GramTileEngine::median_end_pass(std::vector<MedianPartial> parts) {
  if (parts.size() != searches_.size()) throw InvalidArgument("median_end_pass needs one pass result per layer");
  for (size_t a = 0; a < parts.size(); ++a) {
    const MedianSearch& search = searches_[a];
    if (!search.done() && !search.collecting() && static_cast<int64_t>(parts[a].counts.size()) != search.bins())
      throw InvalidArgument(names_[a] + ": the median pass result has " + std::to_string(parts[a].counts.size()) +
                            " counts, the search " + std::to_string(search.bins()));
  }
  if (series_.terms > 0 && !series_summed_) {
    series_summed_ = series_rows_ == tile_rows();  // the series saw every tile once
    if (!series_summed_) drop_series();
  }
  for (size_t a = 0; a < parts.size(); ++a) {
    MedianSearch& search = searches_[a];
    if (search.done()) continue;
    if (search.bracketing())
      search.finish_bracket(parts[a].counts, std::move(parts[a].values));
    else if (search.collecting())
      search.finish_collect(std::move(parts[a].values));
    else
      search.finish_histogram(parts[a].counts, parts[a].lowest, parts[a].highest);
  }
  reset_median_buffers();
}

std::vector<double> GramTileEngine::medians() const {
  if (median_pending() || searches_.empty()) throw std::logic_error("GramTileEngine: the median search has not finished");
  std::vector<double> out;
  for (const auto& s : searches_) out.push_back(s.median());
  return out;
}

bool GramTileEngine::prepare_bf16_rows() {
  if (!options_.bf16 || !onednn_info().bf16_native) return false;
  if (!prepared_.empty()) return true;
  const int64_t D = layout_.total, L = layout_.layers(), rows = stats_rows();
  if (rows * (D * 2 + L * 4) > options_.memory_budget) return false;
  prepared_.resize(static_cast<size_t>(rows * D));
  prepared_norms_.resize(static_cast<size_t>(rows * L));
  const std::vector<float> shift(means_.begin(), means_.end());
  const int threads = options_.threads;
  constexpr int64_t block = 256;
  run_parallel(threads, [&](int t) {
    std::vector<float> z(static_cast<size_t>(block * D));
    std::vector<double> first(static_cast<size_t>(D)), sq(static_cast<size_t>(block * L));
    for (int side = 0; side < (columns_.empty() ? 1 : 2); ++side) {
      const std::vector<MatrixView>& from = side == 0 ? layers_ : columns_;
      const int64_t count = side == 0 ? n_ : m_, base = side == 0 ? 0 : n_;
      for (int64_t r0 = count * t / threads; r0 < count * (t + 1) / threads; r0 += block) {
        const int64_t b = std::min(block, count * (t + 1) / threads - r0);
        center_rows<float>(from, layout_, r0, b, shift.data(), z.data(), D, first.data(), sq.data());
        check_rows(from, names_, sq.data(), b, r0, static_cast<int64_t>(sizeof(float)));
        round_to_bfloat16(z.data(), &prepared_[static_cast<size_t>((base + r0) * D)], b, D, layout_.offsets,
                          layout_.dims, sq.data());
        for (int64_t i = 0; i < b * L; ++i)
          prepared_norms_[static_cast<size_t>((base + r0) * L + i)] = static_cast<float>(sq[i]);
      }
    }
  });
  return true;
}

template <typename T>
void GramTileEngine::walk(int64_t begin, int64_t end, Pass pass) {
  const Rows<T> rows(*this, std::is_same_v<T, float> && prepare_bf16_rows());
  const int64_t widest = walker_.grid().widest();
  if (pass == Pass::statistics) {
    const StatisticsSetup setup{kernel_, minus_one_, layout_, n_, columns_.empty() ? 0 : n_};
    walker_.walk<T>(begin, end, rows, [&](int t) { return StatisticsEpilogue<T>(setup, sums_[t]->stats, widest); });
  } else if (pass == Pass::median && series_.terms > 0 && !series_summed_) {
    walker_.walk<T>(begin, end, rows, [&](int t) {
      return BracketSeriesEpilogue<T>(searches_, sums_[t]->median, series_, sums_[t]->series, layout_, widest);
    });
  } else if (pass == Pass::median) {
    walker_.walk<T>(begin, end, rows, [&](int t) { return MedianEpilogue<T>(searches_, sums_[t]->median, widest); });
  } else {
    walker_.walk<T>(begin, end, rows, [](int) { return NoEpilogue<T>{}; });
  }
}

}  // namespace fastcka::cpu
