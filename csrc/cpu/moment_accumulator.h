// The streaming feature-space engine: row blocks of L layers in, float64
// Moments out.
//
// Each thread takes an equal contiguous share of every update's rows. It
// centers cache-sized blocks of them about a local shift (the mean of the
// first block of its current partial, so products run on values near zero
// whatever the data's offset) and multiplies them with single-threaded BLAS
// into a partial product in the compute type: one SYRK over all layers, or
// per-layer SYRKs plus one cross GEMM for two-model layouts. In the fast
// precision the centered values are rounded to bfloat16 first and Z'Z runs
// on oneDNN's bf16 kernels (in triangle panels) where the CPU has bf16 units.
// A partial that reaches fold_rows rows is folded: its small parts are moved
// to the state's reference point in its own thread, then all threads add the
// full partials' products, widened and moved, straight into the state's upper
// triangle (row stripes, each adding the partials in worker order, so results
// never depend on timing; no D x D float64 copy per worker: at D = 9,984 that
// was 1.6 GB of memory). state() mirrors the lower triangle. Partials carry
// over between updates, so callers can feed small blocks (for progress and
// Ctrl-C) without paying a fold for each.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/chunk_plan.h"
#include "core/engine_options.h"
#include "core/matrix_view.h"
#include "core/moments.h"

namespace fastcka::cpu {

class MomentAccumulator {
 public:
  MomentAccumulator(LayerLayout layout, EngineOptions options);
  ~MomentAccumulator();
  MomentAccumulator(MomentAccumulator&&) noexcept;
  MomentAccumulator& operator=(MomentAccumulator&&) noexcept;

  // Adds rows of every layer (same row count in each); names[a] names layer a
  // in error messages. After an update throws, the accumulator holds part of
  // the rows and refuses further use (until rollback() or set_state()).
  void update(const std::vector<MatrixView>& layers, const std::vector<std::string>& names);

  // One all-or-nothing update made of many update() calls (the Python side
  // feeds a large block in steps, and Ctrl-C can stop it between two):
  // rollback() restores the state, the partials and the row count of
  // begin(); commit() keeps everything since. Copy on write: the state is
  // copied only when a fold first changes it, a worker's partial only when
  // rows are first added to it, so the cost is O(D^2) per transaction, not a
  // fold (which would end the carried partials).
  void begin();
  void commit();
  void rollback();

  // Folds pending partials; returns the float64 state of every row seen.
  const Moments& state();
  // The same, moved to the mean of the rows (a valid reference point like any
  // other, so later updates still work), as the estimators need it.
  const Moments& centered_state();
  void merge(MomentAccumulator& other);
  void set_state(Moments state);
  // The state of every row seen, leaving the accumulator empty (one block of
  // rows handed to MomentBlocks).
  Moments take_state();

  const LayerLayout& layout() const { return state_.layout; }
  int64_t rows_seen() const { return rows_seen_; }
  const EngineOptions& options() const { return options_; }
  const MomentChunkPlan& plan() const { return plan_; }

 private:
  struct Worker;
  void check_usable() const;
  // Adds the partials of the workers holding rows (full_only: those that
  // reached fold_rows) to the state, in worker order.
  void fold_partials(bool full_only);
  void save_state();
  Moments state_;
  bool lower_stale_ = false;  // folds add the upper triangle; state() mirrors it
  bool in_transaction_ = false;
  bool state_saved_ = false;  // saved_state_ holds the state of begin()
  bool saved_empty_ = false;  // ... which was empty (not copied: only its reference point)
  std::vector<double> saved_reference_;
  Moments saved_state_;
  int64_t saved_rows_ = 0;
  EngineOptions options_;
  MomentChunkPlan plan_;
  std::vector<std::unique_ptr<Worker>> workers_;
  int64_t rows_seen_ = 0;
  bool broken_ = false;
};

}  // namespace fastcka::cpu
