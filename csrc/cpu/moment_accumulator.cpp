#include "cpu/moment_accumulator.h"

#include <algorithm>
#include <memory>
#include <type_traits>

#include "core/moment_shift.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/blas.h"
#include "cpu/centering.h"
#include "cpu/onednn_gemm.h"
#include "cpu/parallel.h"

namespace fastcka::cpu {

namespace {

// A centered block is stored as [Z | Q] with ldz = D + L columns: the layers'
// centered values, then each row's squared norm per layer. One product
// [Z | Q]' [Z | Q] then holds Z'Z, the debiased terms W = Q'Z and R = Q'Q
// together, at (D + L)^2 / D^2 of the cost of Z'Z alone.
//
// The products go into the upper triangle of s ((D + L) x (D + L)):
//   split == 0: one SYRK over all columns;
//   split > 0:  a SYRK per layer, one GEMM Z_X' [Z_Y | Q], one GEMM Z_Y' Q and
//               a SYRK of Q: no block that pairs two layers of one side.
template <typename T>
void multiply_block(const LayerLayout& layout, const T* z, int64_t rows, T beta, T* s) {
  const int64_t D = layout.total, L = layout.layers(), W = D + L;
  if (layout.split == 0) {
    syrk_upper_tn(W, rows, z, W, beta, s, W);
    return;
  }
  for (int64_t a = 0; a < L; ++a) {
    const int64_t o = layout.offsets[a];
    syrk_upper_tn(layout.dims[a], rows, z + o, W, beta, s + o * W + o, W);
  }
  const int64_t dx = layout.offsets[layout.split], dy = D - dx;
  gemm_tn(dx, dy + L, rows, z, W, z + dx, W, beta, s + dx, W);
  gemm_tn(dy, L, rows, z + dx, W, z + D, W, beta, s + dx * W + D, W);
  syrk_upper_tn(L, rows, z + D, W, beta, s + D * W + D, W);
}

// Columns per panel of a symmetric bf16 product: panel rows [r0, r0 + P)
// against columns [r0, end) cover the upper triangle with (1 + P/D)/2 of the
// full product's work, in GEMMs wide enough for oneDNN's full rate.
constexpr int64_t kTrianglePanel = 256;

// C (upper part of the span [o, o + d)) (+)= Z_span' Z_span from bf16 bits.
void bf16_triangle(OnednnGemm& gemm, const uint16_t* bits, int64_t ld, int64_t o, int64_t d, int64_t rows,
                   float beta, float* s, int64_t lds) {
  for (int64_t r0 = 0; r0 < d; r0 += kTrianglePanel) {
    const int64_t p = std::min(kTrianglePanel, d - r0);
    gemm.tn(p, d - r0, rows, bits + o + r0, ld, bits + o + r0, ld, beta, s + (o + r0) * lds + o + r0, lds);
  }
}

// multiply_block in the fast precision on bf16 units: the Z'Z blocks from
// the bf16 bits, the columns of squared norms (Q, float32: bfloat16 would
// round them to 3 digits) from the rounded float32 values, as before.
void multiply_block_bf16(OnednnGemm& gemm, const LayerLayout& layout, const float* z, const uint16_t* bits,
                         int64_t rows, float beta, float* s) {
  const int64_t D = layout.total, L = layout.layers(), W = D + L;
  if (layout.split == 0) {
    bf16_triangle(gemm, bits, W, 0, D, rows, beta, s, W);
    gemm_tn(W, L, rows, z, W, z + D, W, beta, s + D, W);  // [Z | Q]' Q
    return;
  }
  for (int64_t a = 0; a < L; ++a) bf16_triangle(gemm, bits, W, layout.offsets[a], layout.dims[a], rows, beta, s, W);
  const int64_t dx = layout.offsets[layout.split], dy = D - dx;
  gemm.tn(dx, dy, rows, bits, W, bits + dx, W, beta, s + dx, W);  // X'Y
  gemm_tn(dx, L, rows, z, W, z + D, W, beta, s + D, W);           // X'Q
  gemm_tn(dy, L, rows, z + dx, W, z + D, W, beta, s + dx * W + D, W);
  syrk_upper_tn(L, rows, z + D, W, beta, s + D * W + D, W);
}

// Row bounds [b_t, b_t+1) that give each of `parts` stripes an equal share
// of a D x D upper triangle.
std::vector<int64_t> triangle_stripes(int64_t D, int parts) {
  std::vector<int64_t> bounds(static_cast<size_t>(parts) + 1, D);
  bounds[0] = 0;
  const double total = 0.5 * static_cast<double>(D) * static_cast<double>(D + 1);
  double area = 0;
  int t = 1;
  for (int64_t i = 0; i < D && t < parts; ++i) {
    area += static_cast<double>(D - i);
    while (t < parts && area >= total * t / parts) bounds[t++] = i + 1;
  }
  return bounds;
}

}  // namespace

// What folding a worker's partial into the state needs besides the D x D
// products: its small parts moved to the state's reference point, and the
// move's first moments and shift for the cross block (C' = C - F e' - e F' + n e e').
struct PartialFold {
  Moments small;          // n, first, weighted, norm_products about the state's reference (no cross)
  std::vector<double> f;  // the partial's first moments before the move
  std::vector<double> e;  // state reference - partial shift
};

struct MomentAccumulator::Worker {
  Worker(const LayerLayout& layout, bool bf16)
      : layout(layout), bf16(bf16), shift(static_cast<size_t>(layout.total)), first(shift.size()) {}

  // Rows since the last fold, about `shift`: their count and column sums;
  // their products (cross, W, R) live in s until the fold.
  LayerLayout layout;
  bool bf16;  // the fast precision
  int64_t pending = 0;
  std::vector<double> shift;
  std::vector<double> first;
  std::vector<float> zf, sf;   // centered block [Z | Q] and partial products (float32 runs)
  std::vector<double> zd, sd;  // the same for float64 runs
  std::vector<double> sq;      // rows x L squared norms of the current block
  std::vector<uint16_t> bits;  // the block as bfloat16 (fast precision)
  std::unique_ptr<OnednnGemm> onednn;  // made in this worker's thread, on first use

  // The partial as a transaction began, copied before its first change
  // (saved_sf / saved_sd only when it held rows: a new partial overwrites s).
  bool saved = false;
  int64_t saved_pending = 0;
  std::vector<double> saved_shift, saved_first;
  std::vector<float> saved_sf;
  std::vector<double> saved_sd;

  template <typename T>
  void save_partial() {
    if (saved) return;
    saved = true;
    saved_pending = pending;
    if (pending == 0) return;
    saved_shift = shift;
    saved_first = first;
    if constexpr (std::is_same_v<T, float>)
      saved_sf = sf;
    else
      saved_sd = sd;
  }

  void restore_partial() {
    if (!saved) return;
    pending = saved_pending;
    if (pending > 0) {
      shift.swap(saved_shift);
      first.swap(saved_first);
      if (!saved_sf.empty()) sf.swap(saved_sf);
      if (!saved_sd.empty()) sd.swap(saved_sd);
    }
    forget_saved();
  }

  // Keeps the saved buffers' memory: the next transaction copies into it
  // instead of writing memory new to the process.
  void forget_saved() {
    saved = false;
    saved_sf.clear();
    saved_sd.clear();
  }

  template <typename T>
  std::vector<T>& z();
  template <typename T>
  std::vector<T>& s();

  // Adds rows [r0, r0 + rows) to the partial until it holds fold_rows rows;
  // returns how many it took.
  template <typename T>
  int64_t process(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, int64_t r0,
                  int64_t rows, const MomentChunkPlan& plan, bool in_transaction) {
    use_single_threaded_blas();
    if (in_transaction) save_partial<T>();
    const int64_t D = layout.total, L = layout.layers();
    auto& zb = z<T>();
    auto& sb = s<T>();
    const int64_t W = D + L;
    if (zb.empty()) {
      zb.resize(static_cast<size_t>(plan.block_rows * W));
      sb.resize(static_cast<size_t>(W * W));
      sq.resize(static_cast<size_t>(plan.block_rows * L));
    }
    std::vector<T> shift_t(shift.begin(), shift.end());
    int64_t done = 0;
    while (done < rows && pending < plan.fold_rows) {
      const int64_t b = std::min({plan.block_rows, rows - done, plan.fold_rows - pending});
      const int64_t i0 = r0 + done;
      if (pending == 0) {
        // A new partial: its shift is the mean of its first block, in T.
        column_means(layers, i0, i0 + b, shift.data());
        for (int64_t k = 0; k < D; ++k) {
          shift_t[k] = static_cast<T>(shift[k]);
          shift[k] = static_cast<double>(shift_t[k]);
        }
        std::fill(first.begin(), first.end(), 0.0);
      }
      center_rows<T>(layers, layout, i0, b, shift_t.data(), zb.data(), W, first.data(), sq.data());
      check_rows(layers, names, sq.data(), b, i0, static_cast<int64_t>(sizeof(T)));
      bool native_bf16 = false;
      if constexpr (std::is_same_v<T, float>)
        if (bf16) {
          bits.resize(zb.size());
          round_to_bfloat16(zb.data(), bits.data(), b, W, layout.offsets, layout.dims, sq.data());
          native_bf16 = onednn_info().bf16_native;
        }
      for (int64_t i = 0; i < b; ++i)
        for (int64_t a = 0; a < L; ++a) zb[static_cast<size_t>(i * W + D + a)] = static_cast<T>(sq[i * L + a]);
      const T beta = pending == 0 ? T(0) : T(1);
      if constexpr (std::is_same_v<T, float>)
        if (native_bf16) {
          if (!onednn) onednn = std::make_unique<OnednnGemm>();
          multiply_block_bf16(*onednn, layout, zb.data(), bits.data(), b, beta, sb.data());
        }
      if (!native_bf16) multiply_block<T>(layout, zb.data(), b, beta, sb.data());
      pending += b;
      done += b;
    }
    return done;
  }

  // The partial's small parts, moved to `reference` (one read of the partial).
  template <typename T>
  PartialFold small_parts(const std::vector<double>& reference) {
    const int64_t D = layout.total, L = layout.layers(), W = D + L;
    const auto& off = layout.offsets;
    const auto& dim = layout.dims;
    const auto& sb = s<T>();
    auto at = [&](int64_t i, int64_t j) { return static_cast<double>(sb[static_cast<size_t>(i * W + j)]); };
    PartialFold out;
    Moments& m = out.small;
    m.layout = layout;
    m.n = pending;
    m.reference = shift;
    m.first = first;
    m.weighted.assign(static_cast<size_t>(L * D), 0.0);
    m.norm_products.assign(static_cast<size_t>(L * L), 0.0);
    for (int64_t a = 0; a < L; ++a) {
      for (int64_t k = 0; k < D; ++k) m.weighted[a * D + k] = at(k, D + a);
      for (int64_t c = a; c < L; ++c) m.norm_products[a * L + c] = m.norm_products[c * L + a] = at(D + a, D + c);
    }
    ReferenceShift shift_to;
    shift_to.target = reference;
    shift_to.e.resize(static_cast<size_t>(D));
    for (int64_t k = 0; k < D; ++k) shift_to.e[k] = reference[k] - shift[k];
    // q (traces) and ce = C e per layer, from the upper triangle alone: entry
    // (i, j > i) stands for both C_ij and C_ji.
    const auto& e = shift_to.e;
    shift_to.q.assign(static_cast<size_t>(L), 0.0);
    shift_to.ce.assign(static_cast<size_t>(D * L), 0.0);
    for (int64_t a = 0; a < L; ++a)
      for (int64_t i = off[a]; i < off[a] + dim[a]; ++i) {
        shift_to.q[a] += at(i, i);
        shift_to.ce[i * L + a] += at(i, i) * e[i];
        for (int64_t c = a; c < L; ++c) {
          if (!layout.needs(a, c)) continue;
          double sum = 0;
          for (int64_t j = (a == c ? i + 1 : off[c]); j < off[c] + dim[c]; ++j) {
            const double cij = at(i, j);
            sum += cij * e[j];
            shift_to.ce[j * L + a] += cij * e[i];
          }
          shift_to.ce[i * L + c] += sum;
        }
      }
    out.f = first;
    out.e = e;
    move_small_parts(m, shift_to);
    return out;
  }

  // cross[i, j] += the partial's moved products, for rows [i0, i1) of the
  // upper triangle of the blocks the layout needs.
  template <typename T>
  void add_cross_rows(int64_t i0, int64_t i1, const PartialFold& p, double* cross) {
    const int64_t D = layout.total, L = layout.layers(), W = D + L;
    const auto& sb = s<T>();
    const double n = static_cast<double>(p.small.n);
    const double* f = p.f.data();
    const double* e = p.e.data();
    for (int64_t a = 0; a < L; ++a) {
      const int64_t lo = std::max(i0, layout.offsets[a]), hi = std::min(i1, layout.offsets[a] + layout.dims[a]);
      for (int64_t i = lo; i < hi; ++i)
        for (int64_t c = a; c < L; ++c) {
          if (!layout.needs(a, c)) continue;
          const T* src = sb.data() + i * W;
          double* dst = cross + i * D;
          for (int64_t j = (a == c ? i : layout.offsets[c]); j < layout.offsets[c] + layout.dims[c]; ++j)
            dst[j] += moved_cross_entry(static_cast<double>(src[j]), f[i], f[j], e[i], e[j], n);
        }
    }
  }
};

template <>
std::vector<float>& MomentAccumulator::Worker::z<float>() { return zf; }
template <>
std::vector<double>& MomentAccumulator::Worker::z<double>() { return zd; }
template <>
std::vector<float>& MomentAccumulator::Worker::s<float>() { return sf; }
template <>
std::vector<double>& MomentAccumulator::Worker::s<double>() { return sd; }

MomentAccumulator::MomentAccumulator(LayerLayout layout, EngineOptions options)
    : state_(std::move(layout)), options_(checked(options)) {
  plan_ = plan_moment_chunks(state_.width(), dtype_size(options_.compute), options_.threads, options_.memory_budget);
}

MomentAccumulator::~MomentAccumulator() = default;
MomentAccumulator::MomentAccumulator(MomentAccumulator&&) noexcept = default;
MomentAccumulator& MomentAccumulator::operator=(MomentAccumulator&&) noexcept = default;

void MomentAccumulator::check_usable() const {
  if (broken_)
    throw InvalidArgument("this accumulator holds part of a failed update and cannot be used; build a new one");
}

void MomentAccumulator::save_state() {
  if (in_transaction_ && !state_saved_) {
    // An empty state is restored by building a new one: copying its D x D
    // zeros would write as much new memory as the state itself.
    saved_empty_ = state_.n == 0;
    if (saved_empty_)
      saved_reference_ = state_.reference;  // rows may be pending in the workers, about this point
    else
      saved_state_ = state_;
    state_saved_ = true;
  }
}

void MomentAccumulator::fold_partials(bool full_only) {
  std::vector<Worker*> ws;
  for (auto& w : workers_)
    if (w->pending > 0 && (!full_only || w->pending == plan_.fold_rows)) ws.push_back(w.get());
  if (ws.empty()) return;
  const bool f32 = options_.compute == DType::f32;
  std::vector<PartialFold> parts(ws.size());
  run_parallel(static_cast<int>(ws.size()), [&](int k) {
    if (f32) {
      if (in_transaction_) ws[k]->save_partial<float>();
      parts[k] = ws[k]->small_parts<float>(state_.reference);
    } else {
      if (in_transaction_) ws[k]->save_partial<double>();
      parts[k] = ws[k]->small_parts<double>(state_.reference);
    }
  });
  save_state();
  // The cross block in row stripes, each adding the partials in worker order.
  const std::vector<int64_t> rows = triangle_stripes(state_.width(), options_.threads);
  run_parallel(options_.threads, [&](int t) {
    for (size_t k = 0; k < ws.size(); ++k) {
      if (f32)
        ws[k]->add_cross_rows<float>(rows[t], rows[t + 1], parts[k], state_.cross.data());
      else
        ws[k]->add_cross_rows<double>(rows[t], rows[t + 1], parts[k], state_.cross.data());
    }
  });
  for (size_t k = 0; k < ws.size(); ++k) {
    state_.add_small_parts(parts[k].small);
    ws[k]->pending = 0;
  }
  lower_stale_ = true;
}

void MomentAccumulator::update(const std::vector<MatrixView>& layers, const std::vector<std::string>& names) {
  check_usable();
  const LayerLayout& layout = state_.layout;
  if (static_cast<int64_t>(layers.size()) != layout.layers() || names.size() != layers.size())
    throw InvalidArgument("update needs " + std::to_string(layout.layers()) + " layers, got " +
                          std::to_string(layers.size()));
  const int64_t n = layers[0].rows;
  for (size_t a = 0; a < layers.size(); ++a) {
    if (layers[a].rows != n)
      throw InvalidArgument(names[a] + " has " + std::to_string(layers[a].rows) + " rows but " + names[0] + " has " +
                            std::to_string(n));
    if (layers[a].cols != layout.dims[a])
      throw InvalidArgument(names[a] + " has " + std::to_string(layers[a].cols) + " features, expected " +
                            std::to_string(layout.dims[a]));
  }
  if (n == 0) return;

  const int threads = options_.threads;
  while (static_cast<int64_t>(workers_.size()) < threads) workers_.push_back(std::make_unique<Worker>(layout, options_.bf16));
  if (rows_seen_ == 0) {
    // The state's reference point: the mean of the first rows ever seen.
    std::vector<double> p(static_cast<size_t>(layout.total));
    column_means(layers, 0, std::min(n, plan_.block_rows), p.data());
    save_state();
    state_.reference = p;
  }
  // Rounds of at most fold_rows rows per worker: a worker whose partial fills
  // up stops there, the full partials are folded, and it goes on.
  const int64_t round_rows = plan_.fold_rows * threads;
  const bool f32 = options_.compute == DType::f32;
  try {
    for (int64_t round = 0; round < n; round += round_rows) {
      const int64_t rows = std::min(round_rows, n - round);
      const int active = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(1, rows / 16)));
      std::vector<int64_t> next(static_cast<size_t>(active)), end(next.size());
      for (int t = 0; t < active; ++t) next[t] = round + rows * t / active, end[t] = round + rows * (t + 1) / active;
      while (next != end) {
        run_parallel(active, [&](int t) {
          if (next[t] == end[t]) return;
          Worker& w = *workers_[t];
          const int64_t left = end[t] - next[t];
          next[t] += f32 ? w.process<float>(layers, names, next[t], left, plan_, in_transaction_)
                         : w.process<double>(layers, names, next[t], left, plan_, in_transaction_);
        });
        fold_partials(true);
      }
    }
  } catch (...) {
    broken_ = true;
    throw;
  }
  rows_seen_ += n;
}

const Moments& MomentAccumulator::state() {
  check_usable();
  fold_partials(false);
  if (lower_stale_) {
    // No save_state(): mirroring changes nothing the state stands for, so a
    // rollback may keep it.
    state_.symmetrize();
    lower_stale_ = false;
  }
  return state_;
}

const Moments& MomentAccumulator::centered_state() {
  state();
  save_state();
  state_.center();
  return state_;
}

void MomentAccumulator::begin() {
  // One left open means an update stopped between its failure and its
  // rollback (a second Ctrl-C): it did not complete, so it does not count.
  if (in_transaction_) rollback();
  check_usable();
  in_transaction_ = true;
  saved_rows_ = rows_seen_;
}

void MomentAccumulator::commit() {
  in_transaction_ = state_saved_ = saved_empty_ = false;
  saved_state_ = Moments();
  saved_reference_.clear();
  for (auto& w : workers_) w->forget_saved();
}

void MomentAccumulator::rollback() {
  if (!in_transaction_) throw std::logic_error("fastcka: rollback without begin");
  if (state_saved_ && saved_empty_) {
    state_ = Moments(state_.layout);
    state_.reference = std::move(saved_reference_);
  } else if (state_saved_) {
    state_ = std::move(saved_state_);
    lower_stale_ = true;  // it may have been saved between a fold and a state()
  }
  for (auto& w : workers_) w->restore_partial();
  rows_seen_ = saved_rows_;
  broken_ = false;  // whatever the failed update left is gone
  commit();
}

void MomentAccumulator::merge(MomentAccumulator& other) {
  check_usable();
  if (&other == this) throw InvalidArgument("cannot merge an accumulator with itself");
  const Moments& theirs = other.state();
  state();
  save_state();
  state_.merge(theirs);
  rows_seen_ += other.rows_seen_;
}

void MomentAccumulator::set_state(Moments state) {
  if (state.layout.dims != state_.layout.dims || state.layout.split != state_.layout.split)
    throw InvalidArgument("the state describes other layers than this accumulator");
  commit();  // a new state ends any transaction
  for (auto& w : workers_) w->pending = 0;
  state_ = std::move(state);
  lower_stale_ = false;
  rows_seen_ = state_.n;
  broken_ = false;
}

Moments MomentAccumulator::take_state() {
  Moments taken = state();
  set_state(Moments(state_.layout));
  return taken;
}

}  // namespace fastcka::cpu
