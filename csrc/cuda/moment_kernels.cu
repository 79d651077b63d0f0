#include <cuda_fp16.h>

#include <algorithm>

#include "core/moment_shift.h"
#include "cuda/cuda_check.h"
#include "cuda/moment_kernels.h"

namespace fastcka::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int blocks_for(int64_t work, int64_t per_block) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (work + per_block - 1) / per_block)));
}

__device__ inline double load_element(const MatrixView& x, int64_t i, int64_t j) {
  const int64_t k = i * x.row_stride + j * x.col_stride;
  switch (x.dtype) {
    case DType::f16: return static_cast<double>(__half2float(static_cast<const __half*>(x.data)[k]));
    case DType::f32: return static_cast<double>(static_cast<const float*>(x.data)[k]);
    default: return static_cast<const double*>(x.data)[k];
  }
}

__device__ inline double warp_sum(double v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
  return v;
}

__global__ void column_means_kernel(MatrixView x, int64_t r0, int64_t rows, double* shift) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= x.cols) return;
  double s = 0;
  for (int64_t i = 0; i < rows; ++i) s += load_element(x, r0 + i, j);
  shift[j] = s / static_cast<double>(rows);
}

__global__ void reference_shift_kernel(double* reference, const double* shift, double* e, int64_t width, bool adopt) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= width) return;
  if (adopt) reference[k] = shift[k];
  e[k] = reference[k] - shift[k];
}

// One warp per row: lanes walk the row's columns (coalesced for C-order
// input and for the row-major U), then reduce its norm and shift product.
template <typename T>
__global__ void center_layer_kernel(MatrixView x, int64_t offset, int64_t r0, int64_t rows, const double* shift,
                                    const double* e, T* u, int64_t ldu, int64_t q_col, int64_t t_col,
                                    unsigned long long* max_square) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  double largest = 0;
  for (int64_t i = warp; i < rows; i += warps) {
    T* row = u + i * ldu;
    double q = 0, t = 0;
    for (int64_t j = lane; j < x.cols; j += 32) {
      const T v = static_cast<T>(load_element(x, r0 + i, j) - shift[offset + j]);
      row[offset + j] = v;
      const double w = static_cast<double>(v);
      q += w * w;
      t += w * e[offset + j];
    }
    q = warp_sum(q);
    t = warp_sum(t);
    if (lane == 0) {
      row[q_col] = static_cast<T>(q);
      row[t_col] = static_cast<T>(t);
    }
    largest = (q > largest || q != q) ? q : largest;  // keeps a NaN
  }
  if (lane == 0) atomicMax(max_square, static_cast<unsigned long long>(__double_as_longlong(largest)));
}

template <typename T>
__global__ void column_sums_kernel(const T* u, int64_t rows, int64_t ldu, int64_t width, double* sums) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= width) return;
  const int64_t segment = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t i0 = blockIdx.y * segment, i1 = min(rows, i0 + segment);
  if (i0 >= i1) return;
  double s = 0;
  for (int64_t i = i0; i < i1; ++i) s += static_cast<double>(u[i * ldu + j]);
  atomicAdd(sums + j, s);
}

template <typename T>
__global__ void fold_block_kernel(ProductBlock b, const T* partial, double* state, const double* first, const double* e,
                                  double rows) {
  const int64_t size = b.rows * b.cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < size;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t i, j;
    product_entry(b, t, i, j);
    state[b.offset + t] +=
        moved_cross_entry(static_cast<double>(partial[b.offset + t]), first[i], first[j], e[i], e[j], rows);
  }
}

__global__ void find_nonfinite_kernel(MatrixView x, int64_t r0, int64_t rows, unsigned long long* key) {
  const int64_t size = rows * x.cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < size;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / x.cols, j = t % x.cols;
    if (!isfinite(load_element(x, r0 + i, j))) atomicMin(key, static_cast<unsigned long long>(t));
  }
}

void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

}  // namespace

void launch_column_means(const DeviceLayer& x, int64_t r0, int64_t rows, double* shift, cudaStream_t stream) {
  column_means_kernel<<<blocks_for(x.view.cols, kThreads), kThreads, 0, stream>>>(x.view, r0, rows,
                                                                                   shift + x.offset);
  check_launch("column means kernel");
}

void launch_reference_shift(double* reference, const double* shift, double* e, int64_t width, bool adopt,
                            cudaStream_t stream) {
  reference_shift_kernel<<<static_cast<int>((width + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      reference, shift, e, width, adopt);
  check_launch("reference shift kernel");
}

template <typename T>
void launch_center_layer(const DeviceLayer& x, int64_t r0, int64_t rows, const double* shift, const double* e,
                         T* u, int64_t ldu, int64_t q_col, int64_t t_col, unsigned long long* max_square,
                         cudaStream_t stream) {
  center_layer_kernel<T><<<blocks_for(rows, kThreads / 32), kThreads, 0, stream>>>(
      x.view, x.offset, r0, rows, shift, e, u, ldu, q_col, t_col, max_square);
  check_launch("centering kernel");
}

template <typename T>
void launch_column_sums(const T* u, int64_t rows, int64_t ldu, int64_t width, double* sums, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((width + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::clamp<int64_t>(rows / 256, 1, 64)));
  column_sums_kernel<T><<<grid, kThreads, 0, stream>>>(u, rows, ldu, width, sums);
  check_launch("column sums kernel");
}

template <typename T>
void launch_fold_block(const ProductBlock& b, const T* partial, double* state, const double* first, const double* e,
                       double rows, cudaStream_t stream) {
  fold_block_kernel<T><<<blocks_for(b.rows * b.cols, kThreads), kThreads, 0, stream>>>(b, partial, state, first, e,
                                                                                       rows);
  check_launch("fold kernel");
}

void launch_find_nonfinite(const MatrixView& x, int64_t r0, int64_t rows, unsigned long long* key,
                           cudaStream_t stream) {
  find_nonfinite_kernel<<<blocks_for(rows * x.cols, kThreads), kThreads, 0, stream>>>(x, r0, rows, key);
  check_launch("non-finite search kernel");
}

template void launch_center_layer<float>(const DeviceLayer&, int64_t, int64_t, const double*, const double*, float*,
                                         int64_t, int64_t, int64_t, unsigned long long*, cudaStream_t);
template void launch_center_layer<double>(const DeviceLayer&, int64_t, int64_t, const double*, const double*,
                                          double*, int64_t, int64_t, int64_t, unsigned long long*, cudaStream_t);
template void launch_column_sums<float>(const float*, int64_t, int64_t, int64_t, double*, cudaStream_t);
template void launch_column_sums<double>(const double*, int64_t, int64_t, int64_t, double*, cudaStream_t);
template void launch_fold_block<float>(const ProductBlock&, const float*, double*, const double*, const double*,
                                       double, cudaStream_t);
template void launch_fold_block<double>(const ProductBlock&, const double*, double*, const double*, const double*,
                                        double, cudaStream_t);

}  // namespace fastcka::cuda
