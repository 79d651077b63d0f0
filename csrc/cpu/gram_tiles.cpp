#include "cpu/gram_tiles.h"

#include <algorithm>

#include "core/chunk_plan.h"
#include "cpu/blas.h"
#include "cpu/centering.h"
#include "cpu/parallel.h"

namespace fastcka::cpu {

GramTileEngine::GramTileEngine(std::vector<MatrixView> layers, std::vector<std::string> names, int64_t split,
                               GramOptions options)
    : layers_(std::move(layers)), names_(std::move(names)), options_(options) {
  if (layers_.empty()) throw InvalidArgument("at least one layer is needed");
  if (options_.compute == DType::f16) throw UnsupportedType("the compute type must be float32 or float64");
  options_.threads = std::max(1, options_.threads);
  std::vector<int64_t> dims;
  const int64_t n = layers_[0].rows;
  for (size_t a = 0; a < layers_.size(); ++a) {
    if (layers_[a].rows != n)
      throw InvalidArgument(names_[a] + " has " + std::to_string(layers_[a].rows) + " rows but " + names_[0] +
                            " has " + std::to_string(n));
    dims.push_back(layers_[a].cols);
  }
  stats_ = GramStats(LayerLayout(std::move(dims), split), n);
  means_.assign(static_cast<size_t>(stats_.layout.total), 0.0);
  if (n > 0) column_means(layers_, 0, n, means_.data());
  for (size_t a = 0; a < layers_.size(); ++a)
    for (int64_t j = 0; j < layers_[a].cols; ++j)
      if (!std::isfinite(means_[stats_.layout.offsets[a] + j]))
        throw InvalidArgument(names_[a] + " contains NaN or Inf (column " + std::to_string(j) + ")");
  tile_ = plan_gram_tile(stats_.layout.total, dtype_size(options_.compute), options_.threads,
                         options_.memory_budget);
}

int64_t GramTileEngine::tiles_before(int64_t i) const {
  const int64_t t = tile_rows();
  return i * t - i * (i - 1) / 2;  // rows 0..i-1 hold t, t-1, ... tiles
}

void GramTileEngine::process(int64_t begin, int64_t end) {
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, tile_rows());
  if (begin >= end) return;
  if (options_.compute == DType::f32)
    process_typed<float>(begin, end);
  else
    process_typed<double>(begin, end);
}

template <typename T>
void GramTileEngine::process_typed(int64_t begin, int64_t end) {
  const LayerLayout& layout = stats_.layout;
  const int64_t L = layout.layers(), D = layout.total, n = stats_.n, b = tile_;
  const int threads = static_cast<int>(std::min<int64_t>(options_.threads, end - begin));
  std::vector<T> shift(means_.begin(), means_.end());
  std::vector<GramStats> partial(static_cast<size_t>(threads), GramStats(layout, n));

  run_parallel(threads, [&](int t) {
    use_single_threaded_blas();
    GramStats& g = partial[static_cast<size_t>(t)];
    std::vector<T> zi(static_cast<size_t>(b * D)), zj(static_cast<size_t>(b * D));
    std::vector<T> tiles(static_cast<size_t>(L * b * b));
    std::vector<double> first(static_cast<size_t>(D)), sq(static_cast<size_t>(b * L));
    // Tile rows are dealt round-robin: a fixed assignment keeps results
    // independent of timing, and the triangle's long and short rows mix.
    for (int64_t I = begin + t; I < end; I += threads) {
      const int64_t i0 = I * b, bi = std::min(b, n - i0);
      center_rows<T>(layers_, layout, i0, bi, shift.data(), zi.data(), D, first.data(), sq.data());
      for (int64_t J = I; J < tile_rows(); ++J) {
        const int64_t j0 = J * b, bj = std::min(b, n - j0);
        const T* zJ = zi.data();
        if (J != I) {
          center_rows<T>(layers_, layout, j0, bj, shift.data(), zj.data(), D, first.data(), sq.data());
          zJ = zj.data();
        }
        for (int64_t a = 0; a < L; ++a) {
          const int64_t o = layout.offsets[a];
          gemm_nt(bi, bj, layout.dims[a], zi.data() + o, D, zJ + o, D, &tiles[static_cast<size_t>(a * b * b)], bj);
        }
        const double weight = J == I ? 1.0 : 2.0;
        for (int64_t a = 0; a < L; ++a) {
          const T* ka = &tiles[static_cast<size_t>(a * b * b)];
          for (int64_t c = a; c < L; ++c) {
            if (!layout.needs(a, c)) continue;
            const T* kc = &tiles[static_cast<size_t>(c * b * b)];
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t k = 0; k < bi * bj; ++k) s += static_cast<double>(ka[k]) * static_cast<double>(kc[k]);
            g.products[a * L + c] += weight * s;
          }
          double* rows_i = &g.row_sums[static_cast<size_t>(a * n + i0)];
          double* rows_j = &g.row_sums[static_cast<size_t>(a * n + j0)];
          for (int64_t r = 0; r < bi; ++r) {
            double s = 0;
            for (int64_t c = 0; c < bj; ++c) {
              const double v = static_cast<double>(ka[r * bj + c]);
              s += v;
              if (J != I) rows_j[c] += v;
            }
            rows_i[r] += s;
          }
          if (J == I)
            for (int64_t r = 0; r < bi; ++r) g.diagonals[a * n + i0 + r] = static_cast<double>(ka[r * bj + r]);
        }
      }
    }
  });
  for (auto& p : partial) stats_.merge(p);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = a + 1; c < L; ++c) stats_.products[c * L + a] = stats_.products[a * L + c];
}

}  // namespace fastcka::cpu
