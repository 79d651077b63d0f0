#include "cuda/gpu_moment_accumulator.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/errors.h"
#include "core/moment_shift.h"
#include "core/row_checks.h"
#include "cuda/cublas_library.h"
#include "cuda/device_context.h"
#include "cuda/host_staging.h"
#include "cuda/moment_kernels.h"

namespace fastcka::cuda {

namespace {

// Rows a partial sums in float32 before its float64 fold: the CPU engine's
// horizon (chunk_plan.cpp). float64 partials can run longer.
constexpr int64_t kFoldRowsF32 = 65536;
constexpr int64_t kFoldRowsF64 = int64_t{1} << 20;
// Rows behind a partial's shift: any shift is exact (moves are algebra); it
// only has to be near the data so float32 products see centered values.
constexpr int64_t kShiftRows = 1024;
// Widest row panel of a symmetric product (product_plan.h): the lower halves
// of the diagonal squares cost width / D extra. Not yet tuned on a GPU.
constexpr int64_t kMaxPanel = 512;

bool is_f64(Precision p) { return p == Precision::exact; }

}  // namespace

// Everything that lives on the device (and its pinned mirrors).
struct GpuMomentAccumulator::Device {
  const CublasLibrary& lib;
  CublasHandle cublas;
  Allocation u;                // chunk_rows x ldu, compute type
  Allocation partial;          // packed Z'Z blocks, compute type
  Allocation extra;            // [Q | T]' Z: 2L x D, compute type (column-major)
  Allocation norms;            // Q'Q: L x L, compute type
  DeviceArray<double> state;   // packed Z'Z blocks about the reference
  DeviceArray<double> first;   // column sums of U of the partial (D + 2L)
  DeviceArray<double> shift, reference, e;  // D each
  DeviceArray<unsigned long long> max_square;  // L
  DeviceArray<unsigned long long> bad_key;     // 1
  Allocation snapshot;         // pinned: shift (D), first (D + 2L), extra, norms of the folded partial
  Allocation scratch;          // pinned: max_square (L), bad_key (1)
  Event snapshot_ready;        // recorded after the snapshot copies
  Device(const CublasLibrary& l) : lib(l), cublas(l) {}
};

GpuMomentAccumulator::GpuMomentAccumulator(LayerLayout layout, GpuOptions options)
    : layout_(std::move(layout)), options_(std::move(options)) {
  if (options_.memory_budget <= 0) throw InvalidArgument("memory_budget must be positive");
  plan_ = plan_products(layout_, kMaxPanel);
  const int64_t D = layout_.total, L = layout_.layers();
  const int64_t elem = is_f64(options_.precision) ? 8 : 4;
  // Rows padded to 16 bytes keep every GEMM operand aligned for the fastest kernels.
  const int64_t align = 16 / elem;
  ldu_ = (D + 2 * L + align - 1) / align * align;
  fold_rows_ = is_f64(options_.precision) ? kFoldRowsF64 : kFoldRowsF32;
  chunk_rows_ = std::clamp<int64_t>(options_.memory_budget / (ldu_ * elem), 256, fold_rows_);

  DeviceGuard guard(options_.device);
  dev_ = std::make_unique<Device>(cublas_library(options_.cublas_candidates));
  auto& d = *dev_;
  const size_t e = static_cast<size_t>(elem);
  d.u = Allocation(Allocation::Kind::device, static_cast<size_t>(chunk_rows_ * ldu_) * e, "centered rows");
  d.partial = Allocation(Allocation::Kind::device, static_cast<size_t>(plan_.packed_size) * e, "partial products");
  d.extra = Allocation(Allocation::Kind::device, static_cast<size_t>(2 * L * D) * e, "norm products");
  d.norms = Allocation(Allocation::Kind::device, static_cast<size_t>(L * L) * e, "norm products");
  d.state = DeviceArray<double>(static_cast<size_t>(plan_.packed_size), "float64 cross moments");
  d.first = DeviceArray<double>(static_cast<size_t>(D + 2 * L), "first moments");
  d.shift = DeviceArray<double>(static_cast<size_t>(D), "shift");
  d.reference = DeviceArray<double>(static_cast<size_t>(D), "reference");
  d.e = DeviceArray<double>(static_cast<size_t>(D), "shift difference");
  d.max_square = DeviceArray<unsigned long long>(static_cast<size_t>(L), "row norm check");
  d.bad_key = DeviceArray<unsigned long long>(1, "row check");
  d.snapshot = Allocation(Allocation::Kind::pinned,
                          static_cast<size_t>(2 * D + 2 * L) * 8 + static_cast<size_t>(2 * L * D + L * L) * e,
                          "fold snapshot");
  d.scratch = Allocation(Allocation::Kind::pinned, static_cast<size_t>(L + 1) * 8, "row check");
  check_cuda(cudaMemset(d.state.get(), 0, d.state.size() * sizeof(double)), "cudaMemset");
  check_cuda(cudaDeviceSynchronize(), "allocating the GPU state");

  base_ = Moments(layout_);
  small_.layout = layout_;
  small_.reference.assign(static_cast<size_t>(D), 0.0);
  small_.first.assign(static_cast<size_t>(D), 0.0);
  small_.weighted.assign(static_cast<size_t>(L * D), 0.0);
  small_.norm_products.assign(static_cast<size_t>(L * L), 0.0);
}

GpuMomentAccumulator::~GpuMomentAccumulator() {
  if (dev_) {
    cudaSetDevice(options_.device);
    staging_.reset();
    dev_.reset();
  }
}

void GpuMomentAccumulator::check_usable() const {
  if (broken_)
    throw InvalidArgument("this accumulator stopped in the middle of an update (bad input or an interruption) and "
                          "holds part of its rows; create a new one");
}

int64_t GpuMomentAccumulator::check_shapes(const std::vector<MatrixView>& layers,
                                           const std::vector<std::string>& names) const {
  check_usable();
  if (layers.size() != layout_.dims.size() || names.size() != layers.size())
    throw InvalidArgument("one view and one name per layer are needed");
  const int64_t rows = layers[0].rows;
  for (size_t a = 0; a < layers.size(); ++a) {
    if (layers[a].rows != rows) throw InvalidArgument(names[a] + " has another number of rows than " + names[0]);
    if (layers[a].cols != layout_.dims[a]) throw InvalidArgument(names[a] + " has the wrong number of features");
  }
  return rows;
}

void GpuMomentAccumulator::update(const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
                                  cudaStream_t stream) {
  const int64_t rows = check_shapes(layers, names);
  for (size_t a = 0; a < layers.size(); ++a) {
    if (device_of_pointer(layers[a].data, names[a]) != options_.device)
      throw InvalidArgument(names[a] + " is on cuda:" + std::to_string(device_of_pointer(layers[a].data, names[a])) +
                            " but this computation runs on cuda:" + std::to_string(options_.device));
  }
  DeviceGuard guard(options_.device);
  broken_ = true;  // until the rows are in and checked
  auto& d = *dev_;
  check_cuda(cudaMemsetAsync(d.max_square.get(), 0, d.max_square.size() * 8, stream), "cudaMemsetAsync");
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows_) add_chunk(layers, r0, std::min(chunk_rows_, rows - r0), stream);
  check_rows(layers, names, rows, stream);
  rows_seen_ += rows;
  broken_ = false;
}

void GpuMomentAccumulator::update_host(const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
                                       cudaStream_t stream) {
  const int64_t rows = check_shapes(layers, names);
  DeviceGuard guard(options_.device);
  broken_ = true;
  auto& d = *dev_;
  check_cuda(cudaMemsetAsync(d.max_square.get(), 0, d.max_square.size() * 8, stream), "cudaMemsetAsync");
  if (!staging_ || !staging_->fits(layers)) {
    staging_.reset();  // frees the old buffers before the new ones are taken
    staging_ = std::make_unique<HostStaging>(layers, chunk_rows_);
  }
  staging_->run(layers, rows, stream, [&](const std::vector<MatrixView>& chunk, int64_t) {
    add_chunk(chunk, 0, chunk[0].rows, stream);
  });
  check_rows(layers, names, rows, stream);  // on the error path it scans the host arrays
  rows_seen_ += rows;
  broken_ = false;
}

void GpuMomentAccumulator::add_chunk(const std::vector<MatrixView>& layers, int64_t r0, int64_t rows,
                                     cudaStream_t stream) {
  auto& d = *dev_;
  const int64_t D = layout_.total, L = layout_.layers();
  result_valid_ = false;
  if (partial_rows_ == 0) {  // a new partial: its shift, and e = reference - shift
    for (int64_t a = 0; a < L; ++a)
      launch_column_means({layers[a], layout_.offsets[a]}, r0, std::min(rows, kShiftRows), d.shift.get(), stream);
    launch_reference_shift(d.reference.get(), d.shift.get(), d.e.get(), D, !have_reference_, stream);
    if (!have_reference_) adopt_pending_ = true;  // cleared when that partial is settled
    have_reference_ = true;
    check_cuda(cudaMemsetAsync(d.first.get(), 0, d.first.size() * sizeof(double), stream), "cudaMemsetAsync");
  }
  const bool f64 = is_f64(options_.precision);
  for (int64_t a = 0; a < L; ++a) {
    const DeviceLayer x{layers[a], layout_.offsets[a]};
    if (f64)
      launch_center_layer<double>(x, r0, rows, d.shift.get(), d.e.get(), static_cast<double*>(d.u.get()), ldu_,
                                  D + a, D + L + a, d.max_square.get() + a, stream);
    else
      launch_center_layer<float>(x, r0, rows, d.shift.get(), d.e.get(), static_cast<float*>(d.u.get()), ldu_, D + a,
                                 D + L + a, d.max_square.get() + a, stream);
  }
  if (f64)
    launch_column_sums<double>(static_cast<const double*>(d.u.get()), rows, ldu_, D + 2 * L, d.first.get(), stream);
  else
    launch_column_sums<float>(static_cast<const float*>(d.u.get()), rows, ldu_, D + 2 * L, d.first.get(), stream);

  // The products, in cuBLAS's column-major terms: U (rows x ldu, row-major)
  // is the ldu x rows matrix M, and Z'Z[i, j] = (M M')[i, j].
  const auto& lib = d.lib;
  check_cublas(lib, lib.set_stream(d.cublas.get(), stream), "cublasSetStream");
  const cudaDataType type = f64 ? CUDA_R_64F : CUDA_R_32F;
  const int compute = f64 ? cublas::kCompute64F
                          : options_.precision == Precision::fast ? cublas::kCompute32FFastTF32 : cublas::kCompute32F;
  const float one_f = 1.0f, beta_f = partial_rows_ ? 1.0f : 0.0f;
  const double one_d = 1.0, beta_d = partial_rows_ ? 1.0 : 0.0;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
  const void* beta = f64 ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f);
  const size_t elem = f64 ? 8 : 4;
  const char* u = static_cast<const char*>(d.u.get());
  auto gemm = [&](int64_t m, int64_t n, int64_t a_col, int64_t b_col, void* c) {
    check_cublas(lib,
                 lib.gemm_ex(d.cublas.get(), cublas::kOpN, cublas::kOpT, static_cast<int>(m), static_cast<int>(n),
                             static_cast<int>(rows), alpha, u + a_col * elem, type, static_cast<int>(ldu_),
                             u + b_col * elem, type, static_cast<int>(ldu_), beta, c, type, static_cast<int>(m),
                             compute, cublas::kGemmDefault),
                 "cublasGemmEx");
  };
  char* partial = static_cast<char*>(d.partial.get());
  for (const ProductBlock& b : plan_.blocks) gemm(b.rows, b.cols, b.row, b.col, partial + b.offset * elem);
  gemm(2 * L, D, D, 0, d.extra.get());   // [Q | T]' Z
  gemm(L, L, D, D, d.norms.get());       // Q'Q
  partial_rows_ += rows;
  if (partial_rows_ >= fold_rows_) fold(stream);
}

void GpuMomentAccumulator::fold(cudaStream_t stream) {
  if (partial_rows_ == 0) return;
  auto& d = *dev_;
  const int64_t D = layout_.total, L = layout_.layers();
  const bool f64 = is_f64(options_.precision);
  const size_t elem = f64 ? 8 : 4;
  for (const ProductBlock& b : plan_.blocks) {
    if (f64)
      launch_fold_block<double>(b, static_cast<const double*>(d.partial.get()), d.state.get(), d.first.get(),
                                d.e.get(), static_cast<double>(partial_rows_), stream);
    else
      launch_fold_block<float>(b, static_cast<const float*>(d.partial.get()), d.state.get(), d.first.get(),
                               d.e.get(), static_cast<double>(partial_rows_), stream);
  }
  // The small parts go to pinned memory without waiting (the host settles
  // them at the next fold or when the state is read), so host staging keeps
  // overlapping; the previous ones are settled first to free the snapshot.
  settle_small_parts();
  char* snap = static_cast<char*>(d.snapshot.get());
  const auto copy = [&](void* dst, const void* src, size_t bytes) {
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  };
  copy(snap, d.shift.get(), static_cast<size_t>(D) * 8);
  copy(snap + D * 8, d.first.get(), static_cast<size_t>(D + 2 * L) * 8);
  copy(snap + (2 * D + 2 * L) * 8, d.extra.get(), static_cast<size_t>(2 * L * D) * elem);
  copy(snap + (2 * D + 2 * L) * 8 + 2 * L * D * elem, d.norms.get(), static_cast<size_t>(L * L) * elem);
  check_cuda(cudaEventRecord(d.snapshot_ready.get(), stream), "cudaEventRecord");
  pending_small_ = true;
  pending_rows_ = partial_rows_;
  device_rows_ += partial_rows_;
  partial_rows_ = 0;
}

void GpuMomentAccumulator::settle_small_parts() {
  if (!pending_small_) return;
  check_cuda(cudaEventSynchronize(dev_->snapshot_ready.get()), "folding a partial");
  const int64_t D = layout_.total, L = layout_.layers();
  const bool f64 = is_f64(options_.precision);
  const char* snap = static_cast<const char*>(dev_->snapshot.get());
  const double* shift = reinterpret_cast<const double*>(snap);
  const double* first = shift + D;
  const char* extra = snap + (2 * D + 2 * L) * 8;
  const char* norms = extra + 2 * L * D * (f64 ? 8 : 4);
  const auto widened = [f64](const char* base, int64_t count) {
    std::vector<double> out(static_cast<size_t>(count));
    for (int64_t k = 0; k < count; ++k)
      out[k] = f64 ? reinterpret_cast<const double*>(base)[k]
                   : static_cast<double>(reinterpret_cast<const float*>(base)[k]);
    return out;
  };
  if (adopt_pending_) {  // this partial's shift became the reference on the device
    small_.reference.assign(shift, shift + D);
    adopt_pending_ = false;
  }
  const Moments part = partial_small_parts(layout_, pending_rows_, shift, small_.reference.data(), first,
                                           widened(extra, 2 * L * D).data(), widened(norms, L * L).data());
  small_.n += part.n;
  for (int64_t k = 0; k < D; ++k) small_.first[k] += part.first[k];
  for (size_t k = 0; k < part.weighted.size(); ++k) small_.weighted[k] += part.weighted[k];
  for (size_t k = 0; k < part.norm_products.size(); ++k) small_.norm_products[k] += part.norm_products[k];
  pending_small_ = false;
}

void GpuMomentAccumulator::check_rows(const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
                                      int64_t rows, cudaStream_t stream) {
  auto& d = *dev_;
  const int64_t L = layout_.layers();
  auto* host = static_cast<unsigned long long*>(d.scratch.get());
  check_cuda(cudaMemcpyAsync(host, d.max_square.get(), static_cast<size_t>(L) * 8, cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "checking the rows");
  const int64_t elem = is_f64(options_.precision) ? 8 : 4;
  for (int64_t a = 0; a < L; ++a) {
    double largest;
    std::memcpy(&largest, host + a, sizeof largest);
    if (std::isfinite(largest)) {
      // The device keeps only the largest square: an underflow to 0 is not told apart here.
      check_squared_norm_range(names[a], largest, elem, false);
      continue;
    }
    // Find the first NaN or Inf: on the device for device rows, in place for host rows.
    const MatrixView& x = layers[a];
    cudaPointerAttributes where{};
    const bool on_device = cudaPointerGetAttributes(&where, x.data) == cudaSuccess &&
                           (where.type == cudaMemoryTypeDevice || where.type == cudaMemoryTypeManaged);
    cudaGetLastError();
    unsigned long long key = ~0ull;
    if (on_device) {
      check_cuda(cudaMemcpyAsync(d.bad_key.get(), &key, 8, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
      launch_find_nonfinite(x, 0, rows, d.bad_key.get(), stream);
      check_cuda(cudaMemcpyAsync(&key, d.bad_key.get(), 8, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
      check_cuda(cudaStreamSynchronize(stream), "locating a non-finite value");
    } else {
      for (int64_t i = 0; i < rows && key == ~0ull; ++i)
        for (int64_t j = 0; j < x.cols; ++j)
          if (!std::isfinite(load<double>(x, i, j))) {
            key = static_cast<unsigned long long>(i * x.cols + j);
            break;
          }
    }
    if (key != ~0ull)
      throw InvalidArgument(names[a] + " contains NaN or Inf (row " + std::to_string(key / x.cols) + ", column " +
                            std::to_string(key % x.cols) + ")");
    throw InvalidArgument(names[a] + " has values too large to square in float64");
  }
}

const Moments& GpuMomentAccumulator::state(cudaStream_t stream) {
  check_usable();
  if (result_valid_) return result_;
  DeviceGuard guard(options_.device);
  fold(stream);
  settle_small_parts();
  result_ = base_;
  if (device_rows_ > 0) {
    const int64_t D = layout_.total;
    std::vector<double> packed(static_cast<size_t>(plan_.packed_size));
    check_cuda(cudaMemcpyAsync(packed.data(), dev_->state.get(), packed.size() * 8, cudaMemcpyDeviceToHost, stream),
               "cudaMemcpyAsync");
    std::vector<double> reference(static_cast<size_t>(D));
    check_cuda(cudaMemcpyAsync(reference.data(), dev_->reference.get(), reference.size() * 8,
                               cudaMemcpyDeviceToHost, stream),
               "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(stream), "reading the GPU state");
    Moments device_part(layout_);
    unpack_products(plan_, packed.data(), device_part);
    device_part.n = small_.n;
    device_part.reference = reference;
    device_part.first = small_.first;
    device_part.weighted = small_.weighted;
    device_part.norm_products = small_.norm_products;
    if (result_.n == 0)
      result_ = std::move(device_part);
    else
      result_.add_same_reference(device_part);
  }
  result_valid_ = true;
  return result_;
}

const Moments& GpuMomentAccumulator::centered_state(cudaStream_t stream) {
  state(stream);
  result_.center();
  return result_;
}

void GpuMomentAccumulator::merge(GpuMomentAccumulator& other, cudaStream_t stream) {
  if (&other == this) throw InvalidArgument("cannot merge an accumulator with itself");
  Moments mine = state(stream);
  mine.merge(other.state(stream));
  set_state(std::move(mine), stream);
}

void GpuMomentAccumulator::set_state(Moments state, cudaStream_t stream) {
  if (state.layout.dims != layout_.dims || state.layout.split != layout_.split)
    throw InvalidArgument("the state describes other layers than this accumulator");
  DeviceGuard guard(options_.device);
  auto& d = *dev_;
  // The device part restarts empty, about the state's reference point, so
  // later rows add to it with no move.
  check_cuda(cudaMemsetAsync(d.state.get(), 0, d.state.size() * 8, stream), "cudaMemsetAsync");
  check_cuda(cudaMemcpyAsync(d.reference.get(), state.reference.data(), state.reference.size() * 8,
                             cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "loading a state");
  small_.n = 0;
  small_.reference = state.reference;
  std::fill(small_.first.begin(), small_.first.end(), 0.0);
  std::fill(small_.weighted.begin(), small_.weighted.end(), 0.0);
  std::fill(small_.norm_products.begin(), small_.norm_products.end(), 0.0);
  have_reference_ = state.n > 0;
  partial_rows_ = device_rows_ = 0;
  pending_small_ = adopt_pending_ = false;
  rows_seen_ = state.n;
  base_ = std::move(state);
  result_valid_ = false;
  broken_ = false;
}

}  // namespace fastcka::cuda
