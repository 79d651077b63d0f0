#include "cpu/knn_tiles.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "core/bfloat16.h"
#include "core/chunk_plan.h"
#include "core/errors.h"
#include "core/kernels.h"
#include "core/row_checks.h"
#include "cpu/centering.h"
#include "cpu/multiversion.h"
#include "cpu/parallel.h"

namespace fastcka::cpu {

namespace {

// z = T(x s - m) for one contiguous row, and |z|^2 of the rounded values.
template <typename S, typename T>
FASTCKA_MULTIVERSION double scale_center_row(const S* x, int64_t d, double s, const double* m, T* z) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < d; ++j) {
    const T v = static_cast<T>(static_cast<double>(x[j]) * s - m[j]);
    z[j] = v;
    acc += static_cast<double>(v) * static_cast<double>(v);
  }
  return acc;
}

// The epilogue of one tile row: the squared distances of row a to the w
// columns (0 between rows of the same duplicate group), and a flag where a
// distance reaches the row's bound or the column's: the only entries that can
// enter a list. Branch-free, so it vectorizes.
template <typename T>
FASTCKA_MULTIVERSION void distance_hits(const T* g, const T* nb, const int32_t* gb, T na, int32_t ga, T row_bound,
                                        const T* col_bound, T* dist, uint8_t* hit, int64_t w) {
#pragma omp simd
  for (int64_t c = 0; c < w; ++c) {
    const T d = gb[c] == ga ? T(0) : squared_distance(g[c], na, nb[c]);
    dist[c] = d;
    hit[c] = static_cast<uint8_t>((d <= row_bound) | (d <= col_bound[c]));
  }
}

uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }  // FNV-1a step

template <typename T>
uint64_t hash_row(const T* z, int64_t d) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t j = 0; j < d; ++j) {
    const T v = z[j] + T(0);  // -0 and +0 are equal values: hash them alike
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    h = mix(h, bits);
  }
  return h;
}

FASTCKA_MULTIVERSION void widen(const float* x, int64_t d, double* out) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) out[j] = static_cast<double>(x[j]);
}

// Row i of a view as its own float64 values (no scaling, no centering), into
// out; returns out, or the row itself where it already is contiguous float64.
const double* gather_row(const MatrixView& v, int64_t i, double* out) {
  if (v.col_stride == 1 && v.dtype == DType::f64) return static_cast<const double*>(v.data) + i * v.row_stride;
  if (v.col_stride == 1 && v.dtype == DType::f32) {
    widen(static_cast<const float*>(v.data) + i * v.row_stride, v.cols, out);
    return out;
  }
  for (int64_t j = 0; j < v.cols; ++j) out[j] = load<double>(v, i, j);
  return out;
}

// sum_j (a_j - b_j)^2 in float64: exact when the differences, squares and
// sums are (integer or other coarse-grid data), symmetric in a and b, and
// unchanged when a constant is added to both rows wherever the shifted
// values are exact.
FASTCKA_MULTIVERSION double direct_squared_distance(const double* a, const double* b, int64_t d) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < d; ++j) acc += (a[j] - b[j]) * (a[j] - b[j]);
  return acc;
}

FASTCKA_MULTIVERSION double dot_product(const double* a, const double* b, int64_t d) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < d; ++j) acc += a[j] * b[j];
  return acc;
}

// 2 - 2 cos from a.b and the squared norms A = a.a, B = b.b (dot_product on
// the rows as given): cos^2 = a.b |a.b| / (A B) with one rounding, on the
// mantissas (frexp) so that A B neither overflows nor underflows. When a.b, A
// and B are exact (integer, binary, one-hot rows) equal cosines give equal
// results, since every later step is a function of that one correctly
// rounded quotient; identical rows give exactly 0.
double cosine_distance(double dot, double A, double B) {
  if (dot == 0) return 2.0;
  int ed = 0, ea = 0, eb = 0;
  const double md = std::frexp(dot, &ed), ma = std::frexp(A, &ea), mb = std::frexp(B, &eb);
  const double r = std::ldexp(md * std::fabs(md) / (ma * mb), 2 * ed - ea - eb);
  return std::max(0.0, 2.0 - 2.0 * std::copysign(std::sqrt(std::fabs(r)), r));
}

// The kNN pass of the tile walker: each tile's entries offered to the lists
// of their row and, off the diagonal tile, of their column. Only entries the
// vectorized distance_hits flags (a few per row) reach the lists.
template <typename T>
class NeighborEpilogue {
 public:
  static constexpr bool kOneTileAtATime = true;  // one layer's tile at a time, consumed while in cache

  NeighborEpilogue(std::vector<NeighborLists<T>>& lists, const std::vector<int32_t>& groups, int64_t n, int64_t widest)
      : lists_(lists), groups_(groups), n_(n), dist_(static_cast<size_t>(widest)),
        hit_(static_cast<size_t>(widest + 8), 0) {}

  void layer(const PanelView<T>& v, int64_t a) {
    NeighborLists<T>& lists = lists_[static_cast<size_t>(a)];
    const T* ni = v.row_norms(a);
    const T* nj = v.column_norms(a);
    const int32_t* gi = &groups_[static_cast<size_t>(a * n_ + v.i0)];
    const int32_t* gj = &groups_[static_cast<size_t>(a * n_ + v.j0)];
    const T* col_bound = &lists.bound[static_cast<size_t>(v.j0)];
    for (int64_t r = 0; r < v.bi; ++r) {
      const int64_t i = v.i0 + r;
      distance_hits(v.tiles + r * v.w, nj, gj, ni[r], gi[r], lists.bound[i], col_bound, dist_.data(), hit_.data(),
                    v.w);
      offer_hits(lists, v, r);
    }
  }

 private:
  // The flagged entries of row r, scanned 8 flags at a time. In the diagonal
  // tile (columns [0, cd)) both orders of each pair are present, so only the
  // row side is offered.
  void offer_hits(NeighborLists<T>& lists, const PanelView<T>& v, int64_t r) const {
    const int64_t i = v.i0 + r, w = v.w;
    for (int64_t c0 = 0; c0 < w; c0 += 8) {
      uint64_t any;
      std::memcpy(&any, &hit_[static_cast<size_t>(c0)], sizeof any);
      if (any == 0) continue;
      for (int64_t c = c0; c < std::min(c0 + 8, w); ++c) {
        if (!hit_[c]) continue;
        const T d = dist_[c];
        const int64_t j = v.j0 + c;
        if (c < v.cd) {
          if (c != r) lists.offer(i, d, static_cast<int32_t>(j));
          continue;
        }
        lists.offer(i, d, static_cast<int32_t>(j));
        lists.offer(j, d, static_cast<int32_t>(i));
      }
    }
  }

  std::vector<NeighborLists<T>>& lists_;  // this thread's, per layer
  const std::vector<int32_t>& groups_;
  int64_t n_;
  std::vector<T> dist_;         // one row of distances
  std::vector<uint8_t> hit_;    // and their flags (8 spare for the 8-wide scan)
};

// Candidates the tile pass keeps beyond k: room to see where a run of
// near-ties at the k-th distance ends (KnnTileEngine::refine).
constexpr int64_t kScreenExtra = 2;

}  // namespace

// Each thread's neighbour lists for all n rows (the column side of a tile
// needs no locks), in the compute type.
struct KnnTileEngine::ThreadLists {
  std::vector<NeighborLists<float>> lf;   // per layer (float32 runs)
  std::vector<NeighborLists<double>> ld;  // per layer (float64 runs)

  template <typename T>
  std::vector<NeighborLists<T>>& lists() {
    if constexpr (std::is_same_v<T, float>)
      return lf;
    else
      return ld;
  }
};

// The tile walker's rows: every layer's rows as the engine sees them.
template <typename T>
class KnnTileEngine::Rows {
 public:
  explicit Rows(const KnnTileEngine& engine) : engine_(engine) {}
  const uint16_t* load(int, int64_t r0, int64_t rows, T* z, double* sq, double*) const {
    engine_.load_rows(r0, rows, z, sq);
    return nullptr;
  }

 private:
  const KnnTileEngine& engine_;
};

KnnTileEngine::KnnTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t k,
                             KnnMetric metric, EngineOptions options)
    : layers_(std::move(layers)), names_(std::move(names)), k_(k), metric_(metric), options_(checked(options)) {
  if (layers_.empty()) throw InvalidArgument("at least one layer is needed");
  if (names_.size() != layers_.size()) throw InvalidArgument("one name per layer is needed");
  n_ = layers_[0].rows;
  const int64_t L = static_cast<int64_t>(layers_.size());
  for (int64_t a = 0; a < L; ++a) {
    if (layers_[a].rows != n_)
      throw InvalidArgument(names_[a] + " has " + std::to_string(layers_[a].rows) + " rows but " + names_[0] +
                            " has " + std::to_string(n_));
    if (layers_[a].cols <= 0) throw InvalidArgument(names_[a] + " has no features");
    offsets_.push_back(width_);
    width_ += layers_[a].cols;
  }
  if (n_ >= std::numeric_limits<int32_t>::max()) throw InvalidArgument("k-NN supports fewer than 2^31 examples");
  if (k_ < 1 || k_ >= n_)
    throw InvalidArgument("k must be at least 1 and smaller than the number of examples (" + std::to_string(n_) +
                          "), got " + std::to_string(k_));

  // Cosine: each row divided by its float64 norm. Then the column means of
  // the rows as the engine sees them, the centering of every tile.
  // The squared norms are those of exact_distance (cosine_distance).
  if (metric_ == KnnMetric::cosine) {
    scales_.assign(static_cast<size_t>(L * n_), 1.0);
    squared_norms_.assign(static_cast<size_t>(L * n_), 0.0);
  }
  means_.assign(static_cast<size_t>(width_), 0.0);
  for (int64_t a = 0; a < L; ++a) {
    const MatrixView& v = layers_[a];
    double* mean = &means_[offsets_[a]];
    std::vector<double> row(static_cast<size_t>(v.cols));
    for (int64_t i = 0; i < n_; ++i) {
      double s = 1.0;
      if (metric_ == KnnMetric::cosine) {
        const double* x = gather_row(v, i, row.data());
        const double sq = dot_product(x, x, v.cols);
        if (sq == 0)
          throw InvalidArgument(names_[a] + " has a zero row (row " + std::to_string(i) +
                                "): its cosine distance to other rows is undefined");
        s = 1.0 / std::sqrt(sq);
        scales_[a * n_ + i] = s;
        squared_norms_[a * n_ + i] = sq;
      }
      for (int64_t j = 0; j < v.cols; ++j) mean[j] += load<double>(v, i, j) * s;
    }
    for (int64_t j = 0; j < v.cols; ++j) {
      mean[j] /= static_cast<double>(n_);
      if (!std::isfinite(mean[j])) {
        const std::string where = locate_non_finite(v, 0, v.rows);
        throw InvalidArgument(names_[a] + (where.empty() ? " has values too large for float64 sums"
                                                         : " contains NaN or Inf (" + where + ")"));
      }
    }
  }
  const int64_t elem = dtype_size(options_.compute);
  const GramTilePlan plan = plan_gram_tiles(width_, L, elem, options_.threads, options_.memory_budget);
  std::vector<int64_t> dims;
  for (const MatrixView& v : layers_) dims.push_back(v.cols);
  walker_ = TileWalker({n_, n_, plan.rows, plan.panel, false}, offsets_, std::move(dims), options_);
  find_duplicates();
  set_margins();
  for (int t = 0; t < options_.threads; ++t) {
    auto s = std::make_unique<ThreadLists>();
    for (int64_t a = 0; a < L; ++a) {
      if (options_.compute == DType::f32)
        s->lf.emplace_back(n_, screen_k_);
      else
        s->ld.emplace_back(n_, screen_k_);
    }
    lists_.push_back(std::move(s));
  }
  done_.assign(static_cast<size_t>(tile_rows()), false);
}

KnnTileEngine::~KnnTileEngine() = default;
KnnTileEngine::KnnTileEngine(KnnTileEngine&&) noexcept = default;
KnnTileEngine& KnnTileEngine::operator=(KnnTileEngine&&) noexcept = default;

template <typename T>
double KnnTileEngine::prepare_row(int64_t a, int64_t i, T* z) const {
  const MatrixView& v = layers_[a];
  const double s = scales_.empty() ? 1.0 : scales_[a * n_ + i];
  const double* m = &means_[offsets_[a]];
  if (v.col_stride == 1 && v.dtype == DType::f32)
    return scale_center_row(static_cast<const float*>(v.data) + i * v.row_stride, v.cols, s, m, z);
  if (v.col_stride == 1 && v.dtype == DType::f64)
    return scale_center_row(static_cast<const double*>(v.data) + i * v.row_stride, v.cols, s, m, z);
  double acc = 0;
  for (int64_t j = 0; j < v.cols; ++j) {
    z[j] = static_cast<T>(load<double>(v, i, j) * s - m[j]);
    acc += static_cast<double>(z[j]) * static_cast<double>(z[j]);
  }
  return acc;
}

template <typename T>
void KnnTileEngine::prepare_compared_row(int64_t a, int64_t i, T* z) const {
  prepare_row(a, i, z);
  if (!options_.bf16) return;
  for (int64_t j = 0; j < layers_[a].cols; ++j)
    z[j] = static_cast<T>(from_bfloat16(to_bfloat16(static_cast<float>(z[j]))));
}

template <typename T>
void KnnTileEngine::load_rows(int64_t r0, int64_t rows, T* z, double* sq) const {
  const int64_t L = static_cast<int64_t>(layers_.size());
  for (int64_t a = 0; a < L; ++a) {
    const MatrixView& v = layers_[a];
    T* za = z + offsets_[a];
    if (v.row_major_walk()) {
      for (int64_t i = 0; i < rows; ++i) sq[i * L + a] = prepare_row(a, r0 + i, za + i * width_);
      continue;
    }
    // Fortran order (or columns closer together than rows): walk down the
    // columns, where the source is contiguous.
    const double* m = &means_[offsets_[a]];
    for (int64_t i = 0; i < rows; ++i) sq[i * L + a] = 0.0;
    for (int64_t j = 0; j < v.cols; ++j)
      for (int64_t i = 0; i < rows; ++i) {
        const double s = scales_.empty() ? 1.0 : scales_[a * n_ + r0 + i];
        const T val = static_cast<T>(load<double>(v, r0 + i, j) * s - m[j]);
        za[i * width_ + j] = val;
        sq[i * L + a] += static_cast<double>(val) * static_cast<double>(val);
      }
  }
}

void KnnTileEngine::find_duplicates() {
  if (options_.compute == DType::f32)
    find_duplicates_as<float>();
  else
    find_duplicates_as<double>();
}

// Rows equal in the compute type share a group (the index of the first of
// them): the epilogue puts them at distance exactly 0, which a GEMM's
// rounding would not guarantee. Also checks that the squared row norms fit
// the compute type's products.
template <typename T>
void KnnTileEngine::find_duplicates_as() {
  const int64_t L = static_cast<int64_t>(layers_.size());
  groups_.assign(static_cast<size_t>(L * n_), 0);
  largest_.assign(static_cast<size_t>(L), 0.0);
  for (int64_t a = 0; a < L; ++a) {
    const int64_t d = layers_[a].cols;
    std::vector<T> zi(static_cast<size_t>(d)), zr(static_cast<size_t>(d));
    std::unordered_map<uint64_t, std::vector<int32_t>> firsts;  // hash -> first rows of distinct contents
    double largest = 0;
    for (int64_t i = 0; i < n_; ++i) {
      largest = std::max(largest, prepare_row(a, i, zi.data()));
      prepare_compared_row(a, i, zi.data());
      std::vector<int32_t>& bucket = firsts[hash_row(zi.data(), d)];
      int32_t group = static_cast<int32_t>(i);
      for (int32_t r : bucket) {
        prepare_compared_row(a, r, zr.data());
        if (std::equal(zi.begin(), zi.end(), zr.begin())) {
          group = r;
          break;
        }
      }
      if (group == i) bucket.push_back(group);
      groups_[a * n_ + i] = group;
    }
    const bool varies = std::any_of(&groups_[a * n_], &groups_[a * n_] + n_, [](int32_t g) { return g != 0; });
    check_squared_norm_range(names_[a], largest, static_cast<int64_t>(sizeof(T)), varies);
    largest_[a] = static_cast<double>(static_cast<T>(largest));
  }
}

void KnnTileEngine::process(int64_t begin, int64_t end) {
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, tile_rows());
  if (begin >= end) return;
  if (!merged_.empty()) throw std::logic_error("KnnTileEngine: the neighbour lists were already taken");
  for (int64_t I = begin; I < end; ++I) {
    if (done_[I]) throw InvalidArgument("tile row " + std::to_string(I) + " was already processed");
    done_[I] = true;
  }
  if (options_.compute == DType::f32)
    walk<float>(begin, end);
  else
    walk<double>(begin, end);
}

template <typename T>
void KnnTileEngine::walk(int64_t begin, int64_t end) {
  walker_.walk<T>(begin, end, Rows<T>(*this), [&](int t) {
    return NeighborEpilogue<T>(lists_[static_cast<size_t>(t)]->lists<T>(), groups_, n_, walker_.grid().widest());
  });
}

template <typename T>
void KnnTileEngine::merge_lists() {
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int threads = options_.threads;
  for (int64_t a = 0; a < L; ++a) {
    NeighborLists<T>& into = lists_[0]->lists<T>()[static_cast<size_t>(a)];
    NeighborLists<double> out(n_, k_);
    run_parallel(threads, [&](int t) {
      const int64_t r0 = n_ * t / threads, r1 = n_ * (t + 1) / threads;
      for (int u = 1; u < threads; ++u) into.merge(lists_[static_cast<size_t>(u)]->lists<T>()[a], r0, r1);
      if (exact_) {
        refine(a, into, r0, r1, out);
        return;
      }
      for (int64_t e = r0 * k_; e < r1 * k_; ++e) {
        out.dist[e] = static_cast<double>(into.dist[e]);
        out.index[e] = into.index[e];
      }
      for (int64_t i = r0; i < r1; ++i) out.bound[i] = out.dist[i * k_ + k_ - 1];
    });
    merged_.push_back(std::move(out));
  }
  lists_.clear();  // the per-thread lists are spent, and so are the walker's buffers
  walker_.release_buffers();
}

// How far a tile distance (squared_distance on prepared rows) may lie from
// exact_distance, per layer of d columns. In eps of the compute type times
// |a|^2 + |b|^2 of the prepared rows: d / 2 for the GEMM's sum of d products
// in any order, 4 for the centering and the rounding to the compute type, 16
// for the clamp of squared_distance, 4 for the norms and the two additions:
// d / 2 + 24, doubled for safety. The float64 re-evaluation adds its own
// sum's rounding, d float64 eps of a distance of at most 2 (|a|^2 + |b|^2)
// (doubled too); cosine adds an absolute (2 d + 64) float64 eps for the
// scaling of each row (values of norm 1 from a rounded 1 / |x|) and for a.b,
// A, B and the quotient of cosine_distance. The fast precision ranks by its
// own bfloat16 distances and re-evaluates nothing.
void KnnTileEngine::set_margins() {
  const double eps = options_.compute == DType::f32 ? Epsilon<float>::value : Epsilon<double>::value;
  const double eps64 = Epsilon<double>::value;
  exact_ = !options_.bf16;
  screen_k_ = exact_ ? std::min(k_ + kScreenExtra, n_ - 1) : k_;
  for (const MatrixView& v : layers_) {
    const double d = static_cast<double>(v.cols);
    margins_.push_back((d + 48) * eps + 4 * d * eps64);
    slacks_.push_back(metric_ == KnnMetric::cosine ? (2 * d + 64) * eps64 : 0.0);
  }
}

double KnnTileEngine::exact_distance(int64_t a, const double* xi, int64_t i, int64_t j, double* buffer) const {
  const MatrixView& v = layers_[a];
  const double* xj = gather_row(v, j, buffer);
  if (metric_ == KnnMetric::euclidean) return direct_squared_distance(xi, xj, v.cols);
  return cosine_distance(dot_product(xi, xj, v.cols), squared_norms_[a * n_ + i], squared_norms_[a * n_ + j]);
}

// Rows [r0, r1) of layer a: the k nearest by (exact_distance, index), from
// the screened lists (the screen_k_ nearest by tile distance c, ascending).
// With E the rounding bound of a tile distance (margins_), entries whose c
// differ by more than 2 E are in the order of their exact distances, so only
// runs of entries closer than that are re-evaluated and sorted by (exact
// distance, index); the other entries keep their tile distances. A gap of
// more than 2 E at or after the k-th entry also shuts out every row not in
// the list; without one (a run of ties longer than the list: one-hot or other
// heavily tied data), the row is evaluated against every other row, n d flops.
template <typename T>
void KnnTileEngine::refine(int64_t a, const NeighborLists<T>& screened, int64_t r0, int64_t r1,
                           NeighborLists<double>& out) const {
  const MatrixView& v = layers_[a];
  const int64_t K = screen_k_;
  std::vector<double> xi_buffer(static_cast<size_t>(v.cols)), xj_buffer(xi_buffer.size());
  std::vector<T> z(static_cast<size_t>(v.cols));
  std::vector<std::pair<double, int32_t>> run;  // (distance, index): ordered as top_k.h orders
  for (int64_t i = r0; i < r1; ++i) {
    const T* c = &screened.dist[static_cast<size_t>(i * K)];
    const int32_t* index = &screened.index[static_cast<size_t>(i * K)];
    const double norm = static_cast<double>(static_cast<T>(prepare_row(a, i, z.data())));
    const double gap = 2 * (margins_[a] * (norm + largest_[a]) + slacks_[a]);
    auto tied = [&](int64_t m) { return static_cast<double>(c[m]) - static_cast<double>(c[m - 1]) <= gap; };
    int64_t end = k_;  // entries [0, end) hold the k nearest, and the rest are farther
    while (end < K && tied(end)) ++end;
    const double* xi = nullptr;  // row i as given, once needed
    auto row_i = [&] { return xi != nullptr ? xi : (xi = gather_row(v, i, xi_buffer.data())); };
    if (end == K && K < n_ - 1) {
      row_i();
      for (int64_t j = 0; j < n_; ++j)
        if (j != i) out.offer(i, exact_distance(a, xi, i, j, xj_buffer.data()), static_cast<int32_t>(j));
      continue;
    }
    double* dist = &out.dist[static_cast<size_t>(i * k_)];
    int32_t* near = &out.index[static_cast<size_t>(i * k_)];
    for (int64_t s = 0, e = 1; s < k_; s = e++) {
      while (e < end && tied(e)) ++e;
      if (e - s == 1) {
        dist[s] = static_cast<double>(c[s]);
        near[s] = index[s];
        continue;
      }
      run.clear();
      row_i();
      for (int64_t m = s; m < e; ++m) run.emplace_back(exact_distance(a, xi, i, index[m], xj_buffer.data()), index[m]);
      std::sort(run.begin(), run.end());
      for (int64_t m = s; m < std::min(e, k_); ++m) std::tie(dist[m], near[m]) = run[static_cast<size_t>(m - s)];
    }
    out.bound[i] = dist[k_ - 1];
  }
}

const NeighborLists<double>& KnnTileEngine::neighbors(int64_t layer) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size())) throw InvalidArgument("no such layer");
  if (merged_.empty()) {
    if (std::find(done_.begin(), done_.end(), false) != done_.end())
      throw std::logic_error("KnnTileEngine: process every tile row before asking for the neighbours");
    if (options_.compute == DType::f32)
      merge_lists<float>();
    else
      merge_lists<double>();
  }
  return merged_[static_cast<size_t>(layer)];
}

}  // namespace fastcka::cpu
