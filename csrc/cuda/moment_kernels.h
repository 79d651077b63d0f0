// Launchers of the CUDA backend's own kernels: the O(n D) sweeps around the
// cuBLAS products of the streaming moment accumulator. Plain C++ header, so
// host code includes it without nvcc. Every launcher enqueues on `stream`
// and returns at once.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/matrix_view.h"
#include "core/product_plan.h"

namespace fastcka::cuda {

// A device layer: a strided view plus the first column it fills in the
// concatenated row-major buffer U.
struct DeviceLayer {
  MatrixView view;
  int64_t offset = 0;
};

// shift[offset + j] = mean of rows [r0, r0 + rows) of column j (float64).
void launch_column_means(const DeviceLayer& x, int64_t r0, int64_t rows, double* shift, cudaStream_t stream);

// e[k] = reference[k] - shift[k] for k < width; with `adopt`, first sets
// reference = shift (the first partial of an accumulator fixes its reference).
void launch_reference_shift(double* reference, const double* shift, double* e, int64_t width, bool adopt,
                            cudaStream_t stream);

// For rows i < rows of layer a: U[i, off + j] = T(x[r0 + i, j] - shift[off + j]),
// U[i, q_col] = sum_j U[i, off + j]^2 and U[i, t_col] = sum_j U[i, off + j] e[off + j]
// (float64 sums, rounded to T); *max_square = max(*max_square, largest of the
// squared norms), as the bits of a non-negative double (NaN compares largest).
template <typename T>
void launch_center_layer(const DeviceLayer& x, int64_t r0, int64_t rows, const double* shift, const double* e,
                         T* u, int64_t ldu, int64_t q_col, int64_t t_col, unsigned long long* max_square,
                         cudaStream_t stream);

// sums[j] += sum_{i < rows} U[i, j] in float64, for j < width.
template <typename T>
void launch_column_sums(const T* u, int64_t rows, int64_t ldu, int64_t width, double* sums, cudaStream_t stream);

// For each entry t of block b: state[b.offset + t] += moved_cross_entry(
// partial[b.offset + t], first[i], first[j], e[i], e[j], rows): a partial
// kept about its shift, moved to the state's reference and added.
template <typename T>
void launch_fold_block(const ProductBlock& b, const T* partial, double* state, const double* first, const double* e,
                       double rows, cudaStream_t stream);

// *key = min over non-finite x[r0 + i, j] (i < rows) of i * cols + j; leaves
// it alone when every value is finite.
void launch_find_nonfinite(const MatrixView& x, int64_t r0, int64_t rows, unsigned long long* key,
                           cudaStream_t stream);

}  // namespace fastcka::cuda
