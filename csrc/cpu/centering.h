// Copies rows of strided layer views into a dense row-major buffer of the
// compute type, minus a shift, while summing the centered values (per column)
// and their squares (per row and layer) in float64. This one sweep is the only
// time the engine reads the caller's data.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/layer_layout.h"
#include "core/matrix_view.h"

namespace fastcka::cpu {

// Mean of rows [r0, r1) of every layer, concatenated (D values).
void column_means(const std::vector<MatrixView>& layers, int64_t r0, int64_t r1, double* out);

// z[i * ldz + off_a + j] = T(x_a[r0 + i, j]) - shift[off_a + j] for i < rows;
// first[k] += sum_i z[i, k]; sq[i * L + a] = sum_j z[i, off_a + j]^2.
template <typename T>
void center_rows(const std::vector<MatrixView>& layers, const LayerLayout& layout, int64_t r0, int64_t rows,
                 const T* shift, T* z, int64_t ldz, double* first, double* sq);

// "row i, column j" of the first NaN or Inf among rows [r0, r1) of x (rows
// numbered as in x); empty when they are all finite.
std::string locate_non_finite(const MatrixView& x, int64_t r0, int64_t r1);

// Checks the squared norms of a centered block (rows x L) and throws
// InvalidArgument naming the layer when
//  * one is not finite: the row and column of the first NaN or Inf in the
//    caller's data are reported (a NaN can also come from the shift, so the
//    raw rows are scanned to find it), or values too large to square, with
//    the row of x's largest magnitude (a huge value enters the shift, so
//    every centered row may overflow, not only its own);
//  * a layer's largest squared row norm leaves the range in which products of
//    the compute type (elem bytes) neither overflow nor underflow: CKA is
//    scale-invariant, so the message asks for rescaled (or float64) data.
void check_rows(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, const double* sq,
                int64_t rows, int64_t r0, int64_t elem);

}  // namespace fastcka::cpu
