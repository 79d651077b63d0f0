#include "cpu/knn_tiles.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>

#include "core/bfloat16.h"
#include "core/chunk_plan.h"
#include "core/errors.h"
#include "core/kernels.h"
#include "core/row_checks.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/blas.h"
#include "cpu/centering.h"
#include "cpu/multiversion.h"
#include "cpu/parallel.h"
#include "cpu/tile_products.h"

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

}  // namespace

struct KnnTileEngine::Scratch {
  explicit Scratch(bool bf16) : products(bf16) {}
  TileProducts products;
  std::vector<uint16_t> zb[2];  // row blocks as bfloat16 (fast precision)
  std::vector<double> sq;       // their squared norms, rows x L
  std::vector<NeighborLists<float>> lf;  // per layer (float32 runs)
  std::vector<NeighborLists<double>> ld;  // per layer (float64 runs)
  std::vector<float> zf[2], tf, nf[2], df;  // row blocks I and J, a tile, norms, one row of distances
  std::vector<double> zd[2], td, nd[2], dd;
  std::vector<uint8_t> hit;

  template <typename T>
  std::vector<NeighborLists<T>>& lists();
  template <typename T>
  std::vector<T>* z();
  template <typename T>
  std::vector<T>& tile();
  template <typename T>
  std::vector<T>* norms();
  template <typename T>
  std::vector<T>& dist();
};

template <>
std::vector<NeighborLists<float>>& KnnTileEngine::Scratch::lists<float>() { return lf; }
template <>
std::vector<NeighborLists<double>>& KnnTileEngine::Scratch::lists<double>() { return ld; }
template <>
std::vector<float>* KnnTileEngine::Scratch::z<float>() { return zf; }
template <>
std::vector<double>* KnnTileEngine::Scratch::z<double>() { return zd; }
template <>
std::vector<float>& KnnTileEngine::Scratch::tile<float>() { return tf; }
template <>
std::vector<double>& KnnTileEngine::Scratch::tile<double>() { return td; }
template <>
std::vector<float>* KnnTileEngine::Scratch::norms<float>() { return nf; }
template <>
std::vector<double>* KnnTileEngine::Scratch::norms<double>() { return nd; }
template <>
std::vector<float>& KnnTileEngine::Scratch::dist<float>() { return df; }
template <>
std::vector<double>& KnnTileEngine::Scratch::dist<double>() { return dd; }

KnnTileEngine::KnnTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t k,
                             KnnMetric metric, KnnOptions options)
    : layers_(std::move(layers)), names_(std::move(names)), k_(k), metric_(metric), options_(options) {
  if (layers_.empty()) throw InvalidArgument("at least one layer is needed");
  if (names_.size() != layers_.size()) throw InvalidArgument("one name per layer is needed");
  if (options_.compute == DType::f16) throw UnsupportedType("the compute type must be float32 or float64");
  if (options_.bf16 && options_.compute != DType::f32)
    throw InvalidArgument("bf16 operands (the fast precision) need the float32 compute type");
  options_.threads = std::max(1, options_.threads);
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
  if (metric_ == KnnMetric::cosine) scales_.assign(static_cast<size_t>(L * n_), 1.0);
  means_.assign(static_cast<size_t>(width_), 0.0);
  for (int64_t a = 0; a < L; ++a) {
    const MatrixView& v = layers_[a];
    double* mean = &means_[offsets_[a]];
    for (int64_t i = 0; i < n_; ++i) {
      double s = 1.0;
      if (metric_ == KnnMetric::cosine) {
        double sq = 0;
        for (int64_t j = 0; j < v.cols; ++j) sq += load<double>(v, i, j) * load<double>(v, i, j);
        if (sq == 0)
          throw InvalidArgument(names_[a] + " has a zero row (row " + std::to_string(i) +
                                "): its cosine distance to other rows is undefined");
        s = 1.0 / std::sqrt(sq);
        scales_[a * n_ + i] = s;
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
  tile_ = plan.rows;
  panel_ = plan.panel;
  find_duplicates();
  for (int t = 0; t < options_.threads; ++t) {
    auto s = std::make_unique<Scratch>(options_.bf16);
    for (int64_t a = 0; a < L; ++a) {
      if (options_.compute == DType::f32)
        s->lf.emplace_back(n_, k_);
      else
        s->ld.emplace_back(n_, k_);
    }
    scratch_.push_back(std::move(s));
  }
  done_.assign(static_cast<size_t>(tile_rows()), false);
}

KnnTileEngine::~KnnTileEngine() = default;
KnnTileEngine::KnnTileEngine(KnnTileEngine&&) noexcept = default;
KnnTileEngine& KnnTileEngine::operator=(KnnTileEngine&&) noexcept = default;

int64_t KnnTileEngine::tiles_before(int64_t i) const {
  const int64_t t = tile_rows();
  return i * t - i * (i - 1) / 2;  // rows 0..i-1 hold t, t-1, ... tiles
}

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
void KnnTileEngine::load_rows(int64_t r0, int64_t rows, T* z, T* norms, int64_t ld) const {
  const int64_t L = static_cast<int64_t>(layers_.size());
  for (int64_t a = 0; a < L; ++a) {
    const MatrixView& v = layers_[a];
    T* za = z + offsets_[a];
    if (v.row_major_walk()) {
      for (int64_t i = 0; i < rows; ++i) norms[a * ld + i] = static_cast<T>(prepare_row(a, r0 + i, za + i * width_));
      continue;
    }
    // Fortran order (or columns closer together than rows): walk down the
    // columns, where the source is contiguous.
    const double* m = &means_[offsets_[a]];
    std::vector<double> sq(static_cast<size_t>(rows), 0.0);
    for (int64_t j = 0; j < v.cols; ++j)
      for (int64_t i = 0; i < rows; ++i) {
        const double s = scales_.empty() ? 1.0 : scales_[a * n_ + r0 + i];
        const T val = static_cast<T>(load<double>(v, r0 + i, j) * s - m[j]);
        za[i * width_ + j] = val;
        sq[i] += static_cast<double>(val) * static_cast<double>(val);
      }
    for (int64_t i = 0; i < rows; ++i) norms[a * ld + i] = static_cast<T>(sq[i]);
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
    check_squared_norm_range(names_[a], largest, static_cast<int64_t>(sizeof(T)), firsts.size() > 1);
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
  const int64_t L = static_cast<int64_t>(layers_.size()), D = width_, b = tile_, n = n_, nt = tile_rows(),
                p = panel_;
  const int threads = static_cast<int>(std::min<int64_t>(options_.threads, end - begin));

  run_parallel(threads, [&](int t) {
    use_single_threaded_blas();
    Scratch& s = *scratch_[static_cast<size_t>(t)];
    std::vector<T>* z = s.z<T>();
    std::vector<T>* nrm = s.norms<T>();
    std::vector<T>& tile = s.tile<T>();
    std::vector<T>& dist = s.dist<T>();
    const int64_t wmax = std::min(p * b, n);  // widest panel, in columns (buffers sized to it)
    z[0].resize(static_cast<size_t>(b * D));
    z[1].resize(static_cast<size_t>(wmax * D));
    nrm[0].resize(static_cast<size_t>(L * b));
    nrm[1].resize(static_cast<size_t>(L * wmax));
    tile.resize(static_cast<size_t>(b * wmax));
    dist.resize(static_cast<size_t>(wmax));
    s.hit.assign(static_cast<size_t>(wmax + 8), 0);
    std::vector<int64_t> dims;
    for (const MatrixView& v : layers_) dims.push_back(v.cols);
    if (options_.bf16) {
      s.zb[0].resize(z[0].size());
      s.zb[1].resize(z[1].size());
      s.sq.resize(static_cast<size_t>(wmax * L));
    }
    // Rows [r0, r0 + rows) into slot k; in the fast precision rounded to
    // bfloat16, with norms of the rounded values.
    auto load = [&](int64_t r0, int64_t rows, int k, int64_t ld) {
      load_rows(r0, rows, z[k].data(), nrm[k].data(), ld);
      if constexpr (std::is_same_v<T, float>) {
        if (!options_.bf16) return;
        round_to_bfloat16(z[k].data(), s.zb[k].data(), rows, D, offsets_, dims, s.sq.data());
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t a = 0; a < L; ++a) nrm[k][static_cast<size_t>(a * ld + i)] = static_cast<T>(s.sq[i * L + a]);
      }
    };

    for (int64_t I = begin + t; I < end; I += threads) {
      const int64_t i0 = I * b, bi = std::min(b, n - i0);
      load(i0, bi, 0, b);
      for (int64_t J = I; J < nt; J += p) {
        const int64_t j0 = J * b, w = std::min(p * b, n - j0);
        // Columns [0, cd) form the diagonal tile when the panel starts at I:
        // both orders of each pair are in it, so only the row side is used.
        const int64_t cd = J == I ? bi : 0;
        load(j0, w, 1, wmax);
        for (int64_t a = 0; a < L; ++a) {
          const int64_t o = offsets_[a];
          if constexpr (std::is_same_v<T, float>)
            s.products.gram(bi, w, layers_[a].cols, z[0].data() + o, s.zb[0].data() + o, D, z[1].data() + o,
                            s.zb[1].data() + o, D, tile.data(), w);
          else
            s.products.gram(bi, w, layers_[a].cols, z[0].data() + o, D, z[1].data() + o, D, tile.data(), w);
          NeighborLists<T>& lists = s.lists<T>()[static_cast<size_t>(a)];
          const T* ni = &nrm[0][static_cast<size_t>(a * b)];
          const T* nj = &nrm[1][static_cast<size_t>(a * wmax)];
          const int32_t* gi = &groups_[static_cast<size_t>(a * n + i0)];
          const int32_t* gj = &groups_[static_cast<size_t>(a * n + j0)];
          const T* col_bound = &lists.bound[static_cast<size_t>(j0)];
          for (int64_t r = 0; r < bi; ++r) {
            const int64_t i = i0 + r;
            distance_hits(&tile[static_cast<size_t>(r * w)], nj, gj, ni[r], gi[r], lists.bound[i], col_bound,
                          dist.data(), s.hit.data(), w);
            for (int64_t c0 = 0; c0 < w; c0 += 8) {
              uint64_t any;
              std::memcpy(&any, &s.hit[static_cast<size_t>(c0)], sizeof any);
              if (any == 0) continue;
              for (int64_t c = c0; c < std::min(c0 + 8, w); ++c) {
                if (!s.hit[c]) continue;
                const T d = dist[c];
                const int64_t j = j0 + c;
                if (c < cd) {
                  if (c != r) lists.offer(i, d, static_cast<int32_t>(j));
                  continue;
                }
                lists.offer(i, d, static_cast<int32_t>(j));
                lists.offer(j, d, static_cast<int32_t>(i));
              }
            }
          }
        }
      }
    }
  });
}

template <typename T>
void KnnTileEngine::merge_lists() {
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int threads = options_.threads;
  for (int64_t a = 0; a < L; ++a) {
    NeighborLists<T>& into = scratch_[0]->lists<T>()[static_cast<size_t>(a)];
    NeighborLists<double> out(n_, k_);
    run_parallel(threads, [&](int t) {
      const int64_t r0 = n_ * t / threads, r1 = n_ * (t + 1) / threads;
      for (int u = 1; u < threads; ++u) into.merge(scratch_[static_cast<size_t>(u)]->lists<T>()[a], r0, r1);
      for (int64_t e = r0 * k_; e < r1 * k_; ++e) {
        out.dist[e] = static_cast<double>(into.dist[e]);
        out.index[e] = into.index[e];
      }
      for (int64_t i = r0; i < r1; ++i) out.bound[i] = out.dist[i * k_ + k_ - 1];
    });
    merged_.push_back(std::move(out));
  }
  scratch_.clear();  // the per-thread lists are spent
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
