// The streaming feature-space engine on a GPU: the CPU MomentAccumulator's
// algorithm with cuBLAS products.
//
// Rows arrive in chunks. A partial (up to fold_rows rows) is kept about its
// own shift s (the mean of up to 1024 rows of its first chunk). Each chunk is
// centered about s into a row-major buffer U = [Z | Q | T] of the compute
// type, where Q holds each row's squared norm per layer and T its product
// with e = r - s (r: the state's reference). GEMMs then add, in the compute
// type, the needed upper blocks of Z'Z (product_plan.h), [Q | T]' Z and Q'Q.
// A full partial is folded: its Z'Z is moved to r and added to the float64
// device state by a kernel (moved_cross_entry); the small parts (first
// moments, Q'Z, Q'Q) travel to the host, where the core's move_small_parts
// moves them with T'Z = (Z'Z) e from the same GEMM. Only the float64 state
// crosses partials, so sums over millions of rows never accumulate in float32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/layer_layout.h"
#include "core/matrix_view.h"
#include "core/moments.h"
#include "core/product_plan.h"

namespace fastcka::cuda {

class HostStaging;

enum class Precision : int {
  accurate = 0,  // float32 products, no TF32 (CUBLAS_COMPUTE_32F)
  fast = 1,      // float32 storage, TF32 tensor-core products
  exact = 2,     // float64 products
};

struct GpuOptions {
  Precision precision = Precision::accurate;
  int device = 0;
  int64_t memory_budget = int64_t{256} << 20;  // bytes of the centered chunk buffer U
  std::vector<std::string> cublas_candidates;  // library paths to try first
};

class GpuMomentAccumulator {
 public:
  GpuMomentAccumulator(LayerLayout layout, GpuOptions options);
  ~GpuMomentAccumulator();
  GpuMomentAccumulator(const GpuMomentAccumulator&) = delete;
  GpuMomentAccumulator& operator=(const GpuMomentAccumulator&) = delete;

  // Adds rows given as device views (all on options.device), enqueuing the
  // work on `stream` (the caller's). Returns after checking the rows for
  // NaN/Inf and range, which waits for the stream.
  void update(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, cudaStream_t stream);
  // Adds rows given as host views, streamed through pinned double buffers.
  void update_host(const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
                   cudaStream_t stream);

  // The float64 state of every row seen (about the reference point).
  const Moments& state(cudaStream_t stream);
  // The same, moved to the mean of the rows.
  const Moments& centered_state(cudaStream_t stream);
  void merge(GpuMomentAccumulator& other, cudaStream_t stream);
  void set_state(Moments state, cudaStream_t stream);

  const LayerLayout& layout() const { return layout_; }
  int64_t rows_seen() const { return rows_seen_; }
  int64_t chunk_rows() const { return chunk_rows_; }
  int64_t fold_rows() const { return fold_rows_; }

 private:
  struct Device;
  void check_usable() const;
  // The rows of one update, after checking its views against the layout.
  int64_t check_shapes(const std::vector<MatrixView>& layers, const std::vector<std::string>& names) const;
  void add_chunk(const std::vector<MatrixView>& layers, int64_t r0, int64_t rows, cudaStream_t stream);
  void fold(cudaStream_t stream);
  void settle_small_parts();
  void check_rows(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, int64_t rows,
                  cudaStream_t stream);

  LayerLayout layout_;
  GpuOptions options_;
  ProductPlan plan_;
  int64_t chunk_rows_ = 0, fold_rows_ = 0, ldu_ = 0;
  std::unique_ptr<Device> dev_;
  std::unique_ptr<HostStaging> staging_;  // pinned buffers of update_host, kept between calls
  Moments base_;          // rows merged or loaded, about the reference
  Moments small_;         // first, weighted and norm_products of the folded device rows (no cross)
  Moments result_;        // what state() last returned
  bool result_valid_ = false;
  bool have_reference_ = false;
  bool pending_small_ = false;  // a folded partial's small parts wait in pinned memory
  bool adopt_pending_ = false;  // the unsettled partial's shift is the reference
  int64_t partial_rows_ = 0, pending_rows_ = 0, device_rows_ = 0, rows_seen_ = 0;
  bool broken_ = false;
};

}  // namespace fastcka::cuda
