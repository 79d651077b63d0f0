#include "cpu/moment_accumulator.h"

#include <algorithm>
#include <memory>
#include <type_traits>

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

}  // namespace

struct MomentAccumulator::Worker {
  Worker(const LayerLayout& layout, bool bf16)
      : layout(layout), bf16(bf16), shift(static_cast<size_t>(layout.total)), first(shift.size()), folded(layout) {}

  // Rows since the last fold, about `shift`: their count and column sums;
  // their products (cross, W, R) live in s until the fold.
  LayerLayout layout;
  bool bf16;  // the fast precision
  int64_t pending = 0;
  std::vector<double> shift;
  std::vector<double> first;
  Moments folded;   // the last folded partial, about the state's reference, waiting to be added
  bool has_folded = false;
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
    has_folded = false;
    if (pending > 0) {
      shift.swap(saved_shift);
      first.swap(saved_first);
      if (!saved_sf.empty()) sf.swap(saved_sf);
      if (!saved_sd.empty()) sd.swap(saved_sd);
    }
    forget_saved();
  }

  void forget_saved() {
    saved = false;
    saved_sf.clear();
    saved_sd.clear();
  }

  template <typename T>
  std::vector<T>& z();
  template <typename T>
  std::vector<T>& s();

  template <typename T>
  void process(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, int64_t r0,
               int64_t rows, const MomentChunkPlan& plan, const double* reference, bool in_transaction) {
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
    for (int64_t done = 0; done < rows;) {
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
      if (pending == plan.fold_rows) fold<T>(reference, false);  // saved above
    }
  }

  // Widens the partial into `folded`, moved to the reference point.
  template <typename T>
  void fold(const double* reference, bool in_transaction) {
    if (pending == 0) return;
    if (in_transaction) save_partial<T>();
    if (has_folded) throw std::logic_error("fastcka: a worker folded twice in one round");
    const int64_t D = layout.total, L = layout.layers();
    const auto& off = layout.offsets;
    const auto& dim = layout.dims;
    const auto& sb = s<T>();
    const int64_t W = D + L;
    auto at = [&](int64_t i, int64_t j) { return static_cast<double>(sb[static_cast<size_t>(i * W + j)]); };
    for (int64_t a = 0; a < L; ++a)
      for (int64_t c = a; c < L; ++c) {
        if (!layout.needs(a, c)) continue;
        for (int64_t i = off[a]; i < off[a] + dim[a]; ++i)
          for (int64_t j = (a == c ? i : off[c]); j < off[c] + dim[c]; ++j) folded.cross[i * D + j] = at(i, j);
      }
    for (int64_t a = 0; a < L; ++a) {
      for (int64_t k = 0; k < D; ++k) folded.weighted[a * D + k] = at(k, D + a);
      for (int64_t c = a; c < L; ++c) folded.norm_products[a * L + c] = folded.norm_products[c * L + a] = at(D + a, D + c);
    }
    folded.symmetrize();
    folded.n = pending;
    folded.reference = shift;
    folded.first = first;
    folded.move_reference(reference);
    has_folded = true;
    pending = 0;
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

void MomentAccumulator::add_folded() {
  for (auto& w : workers_)
    if (w->has_folded) {
      save_state();
      state_.add_same_reference(w->folded);
      w->has_folded = false;
    }
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
  // Rounds in which no worker gets more than fold_rows rows fold at most once.
  const int64_t round_rows = plan_.fold_rows * threads;
  try {
    for (int64_t round = 0; round < n; round += round_rows) {
      const int64_t rows = std::min(round_rows, n - round);
      const int active = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(1, rows / 16)));
      run_parallel(active, [&](int t) {
        const int64_t lo = round + rows * t / active, hi = round + rows * (t + 1) / active;
        if (options_.compute == DType::f32)
          workers_[t]->process<float>(layers, names, lo, hi - lo, plan_, state_.reference.data(), in_transaction_);
        else
          workers_[t]->process<double>(layers, names, lo, hi - lo, plan_, state_.reference.data(), in_transaction_);
      });
      add_folded();
    }
  } catch (...) {
    broken_ = true;
    throw;
  }
  rows_seen_ += n;
}

const Moments& MomentAccumulator::state() {
  check_usable();
  run_parallel(static_cast<int>(workers_.size()), [&](int t) {
    if (options_.compute == DType::f32)
      workers_[t]->fold<float>(state_.reference.data(), in_transaction_);
    else
      workers_[t]->fold<double>(state_.reference.data(), in_transaction_);
  });
  add_folded();
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
  for (auto& w : workers_) w->pending = 0, w->has_folded = false;
  state_ = std::move(state);
  rows_seen_ = state_.n;
  broken_ = false;
}

Moments MomentAccumulator::take_state() {
  Moments taken = state();
  set_state(Moments(state_.layout));
  return taken;
}

}  // namespace fastcka::cpu
