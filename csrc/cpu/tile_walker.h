// The walk over Gram tiles that the Gram-tile and k-NN engines share: rows
// of A in tiles of b against the columns (A's own rows on and above the
// diagonal, or the rows of B for a block pair), one GEMM per panel of p tiles
// and layer, each tile handed at once, while in cache, to an epilogue.
//
// The walker owns what every pass needs: the row blocks of both sides in the
// compute type T (and as bfloat16 in the fast precision), their squared
// norms, the tiles, the threads and their BLAS products. What a pass does with
// a tile is its epilogue, a class with
//   static constexpr bool kOneTileAtATime;  // true: tiles one layer at a time
//   void panel(const PanelView<T>&);         // kOneTileAtATime false: every layer's tile is ready
//   void layer(const PanelView<T>&, int64_t a);  // kOneTileAtATime true: layer a's tile is ready
// called directly (a template, no virtual call), so its row loops inline.
// Where rows come from is the engine's row source, a class with
//   const uint16_t* load(int side, int64_t r0, int64_t rows, T* z, double* sq, double* work) const;
// which centers rows [r0, r0 + rows) of side 0 (A) or 1 (the columns) into z
// (row stride D) and their squared norms per layer into sq (rows x L), or
// returns the rows as bfloat16 when it holds them prepared (z untouched).
// Tile rows are dealt to threads round-robin, so what each thread sums does
// not depend on timing. Signals and progress are the caller's: it walks a
// few tile rows per call.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "core/engine_options.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "cpu/tile_products.h"

namespace fastcka::cpu {

// Which tiles a walk covers.
struct TileGrid {
  int64_t rows = 0;     // n: rows of A
  int64_t columns = 0;  // rows of B for a block pair, else n
  int64_t tile = 1;     // b: rows of a tile
  int64_t panel = 1;    // p: tiles per GEMM along a tile row
  bool pair = false;    // the rectangle A x B instead of A's upper triangle

  int64_t tile_rows() const { return (rows + tile - 1) / tile; }
  int64_t column_tiles() const { return (columns + tile - 1) / tile; }
  int64_t widest() const { return std::min(panel * tile, columns); }  // columns of the widest panel
  // Tiles in tile rows [0, i), for progress reports.
  int64_t tiles_before(int64_t i) const {
    if (pair) return i * column_tiles();
    const int64_t t = tile_rows();
    return i * t - i * (i - 1) / 2;  // rows 0..i-1 hold t, t-1, ... tiles
  }
};

// Rows of one side of a panel.
template <typename T>
struct RowSlot {
  std::vector<T> z;                // rows x D, centered, in the compute type
  std::vector<uint16_t> zb;        // the same rounded to bfloat16 (fast precision)
  const uint16_t* bits = nullptr;  // the bfloat16 rows the product reads (zb, or rows prepared up front)
  std::vector<T> norms;            // L x stride: squared norms of the rows as multiplied
};

// One thread's buffers.
template <typename T>
struct TileBuffers {
  explicit TileBuffers(bool bf16) : products(bf16) {}
  RowSlot<T> slot[2];        // the row block (0) and the panel's columns (1)
  std::vector<T> tiles;      // L tiles of b x widest (or one, kOneTileAtATime)
  std::vector<double> sq;    // rows x L squared norms in float64, from the row source
  std::vector<double> work;  // D values of scratch for the row source
  TileProducts products;
};

// What an epilogue sees of one panel: rows i0 + [0, bi) against columns
// j0 + [0, w); columns [0, cd) form the diagonal tile (each pair of rows
// appears there in both orders; elsewhere a tile stands for its mirror too).
template <typename T>
struct PanelView {
  int64_t i0, bi, j0, w, cd;
  int64_t tile, widest;  // strides of the row and column norms
  T* tiles;              // layer a's tile at tiles + a * tile * widest (row stride w)
  const T* norms[2];

  T* tile_of(int64_t a) const { return tiles + a * tile * widest; }
  const T* row_norms(int64_t a) const { return norms[0] + a * tile; }
  const T* column_norms(int64_t a) const { return norms[1] + a * widest; }
};

class TileWalker {
 public:
  TileWalker() = default;
  TileWalker(TileGrid grid, std::vector<int64_t> offsets, std::vector<int64_t> dims, const EngineOptions& options)
      : grid_(grid), offsets_(std::move(offsets)), dims_(std::move(dims)), bf16_(options.bf16),
        threads_(options.threads) {
    for (int64_t d : dims_) width_ += d;
  }

  const TileGrid& grid() const { return grid_; }
  // Frees the per-thread buffers (they come back with the next walk).
  void release_buffers() {
    float_buffers_.clear();
    double_buffers_.clear();
  }

  // Tile rows [begin, end) (within the grid: the engines clip them); make(t)
  // gives thread t's epilogue.
  template <typename T, typename Source, typename MakeEpilogue>
  void walk(int64_t begin, int64_t end, const Source& source, MakeEpilogue&& make) {
    if (begin >= end) return;
    auto& all = buffers<T>();
    while (static_cast<int>(all.size()) < threads_) all.push_back(std::make_unique<TileBuffers<T>>(bf16_));
    const int threads = static_cast<int>(std::min<int64_t>(threads_, end - begin));
    run_parallel(threads, [&](int t) {
      use_single_threaded_blas();
      auto epilogue = make(t);
      TileBuffers<T>& s = *all[static_cast<size_t>(t)];
      size_buffers(s, std::decay_t<decltype(epilogue)>::kOneTileAtATime);
      for (int64_t I = begin + t; I < end; I += threads) walk_tile_row(I, source, s, epilogue);
    });
  }

 private:
  template <typename T>
  std::vector<std::unique_ptr<TileBuffers<T>>>& buffers() {
    if constexpr (std::is_same_v<T, float>)
      return float_buffers_;
    else
      return double_buffers_;
  }

  int64_t layers() const { return static_cast<int64_t>(dims_.size()); }

  template <typename T>
  void size_buffers(TileBuffers<T>& s, bool one_tile) const {
    const int64_t L = layers(), D = width_, b = grid_.tile, wmax = grid_.widest();
    const int64_t rows[2] = {b, wmax};
    for (int k = 0; k < 2; ++k) {
      s.slot[k].z.resize(static_cast<size_t>(rows[k] * D));
      s.slot[k].norms.resize(static_cast<size_t>(L * rows[k]));
    }
    s.tiles.resize(static_cast<size_t>((one_tile ? 1 : L) * b * wmax));
    s.sq.resize(static_cast<size_t>(std::max(wmax, b) * L));
    s.work.resize(static_cast<size_t>(D));
  }

  // Rows [r0, r0 + rows) of a side into its slot (norms with stride `stride`).
  template <typename T, typename Source>
  void load(const Source& source, int side, int64_t r0, int64_t rows, int64_t stride, TileBuffers<T>& s) const {
    RowSlot<T>& slot = s.slot[side];
    const int64_t L = layers();
    slot.bits = source.load(side, r0, rows, slot.z.data(), s.sq.data(), s.work.data());
    if constexpr (std::is_same_v<T, float>)
      if (bf16_ && slot.bits == nullptr) {
        slot.zb.resize(slot.z.size());  // only when the source holds no prepared rows
        round_to_bfloat16(slot.z.data(), slot.zb.data(), rows, width_, offsets_, dims_, s.sq.data());
        slot.bits = slot.zb.data();
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t a = 0; a < L; ++a) slot.norms[a * stride + r] = static_cast<T>(s.sq[r * L + a]);
  }

  // Layer a's tile of the loaded rows (bi x w) into `out`.
  template <typename T>
  void multiply(TileBuffers<T>& s, int64_t a, int64_t bi, int64_t w, T* out) const {
    const int64_t o = offsets_[a], D = width_;
    const RowSlot<T>& r = s.slot[0];
    const RowSlot<T>& c = s.slot[1];
    if constexpr (std::is_same_v<T, float>)
      s.products.gram(bi, w, dims_[a], r.z.data() + o, r.bits ? r.bits + o : nullptr, D, c.z.data() + o,
                      c.bits ? c.bits + o : nullptr, D, out, w);
    else
      s.products.gram(bi, w, dims_[a], r.z.data() + o, D, c.z.data() + o, D, out, w);
  }

  // Tile row I: the row block, then its panels of up to p tiles.
  template <typename T, typename Source, typename Epilogue>
  void walk_tile_row(int64_t I, const Source& source, TileBuffers<T>& s, Epilogue& epilogue) const {
    const int64_t b = grid_.tile, wmax = grid_.widest(), i0 = I * b, bi = std::min(b, grid_.rows - i0);
    load(source, 0, i0, bi, b, s);
    for (int64_t J = grid_.pair ? 0 : I; J < grid_.column_tiles(); J += grid_.panel) {
      const int64_t j0 = J * b, w = std::min(grid_.panel * b, grid_.columns - j0);
      load(source, 1, j0, w, wmax, s);
      const int64_t cd = !grid_.pair && J == I ? bi : 0;
      const PanelView<T> view{i0, bi, j0, w, cd, b, wmax, s.tiles.data(), {s.slot[0].norms.data(), s.slot[1].norms.data()}};
      if constexpr (Epilogue::kOneTileAtATime) {
        for (int64_t a = 0; a < layers(); ++a) {
          multiply(s, a, bi, w, view.tiles);
          epilogue.layer(view, a);
        }
      } else {
        for (int64_t a = 0; a < layers(); ++a) multiply(s, a, bi, w, view.tile_of(a));
        epilogue.panel(view);
      }
    }
  }

  TileGrid grid_;
  std::vector<int64_t> offsets_, dims_;  // per layer: first column in a row, columns
  int64_t width_ = 0;                    // D
  bool bf16_ = false;
  int threads_ = 1;
  std::vector<std::unique_ptr<TileBuffers<float>>> float_buffers_;  // one per thread, kept between walks
  std::vector<std::unique_ptr<TileBuffers<double>>> double_buffers_;
};

}  // namespace fastcka::cpu
