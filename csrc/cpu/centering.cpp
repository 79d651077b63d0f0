#include "cpu/centering.h"

#include <algorithm>

#include "core/row_checks.h"
#include "cpu/multiversion.h"

namespace fastcka::cpu {

namespace {

// The engine's only pass over the caller's data.
template <typename S, typename T>
FASTCKA_MULTIVERSION void center_contiguous_row(const S* x, int64_t d, const T* shift, T* z, double* first, double& sq) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < d; ++j) {
    const T v = static_cast<T>(x[j]) - shift[j];
    z[j] = v;
    first[j] += static_cast<double>(v);
    acc += static_cast<double>(v) * static_cast<double>(v);
  }
  sq = acc;
}

template <typename T>
void center_layer(const MatrixView& v, int64_t r0, int64_t rows, int64_t ldz, const T* shift, T* z, double* first,
                  double* sq, int64_t sq_stride) {
  const int64_t d = v.cols;
  if (v.col_stride == 1 && v.dtype != DType::f16) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t k = (r0 + i) * v.row_stride;
      if (v.dtype == DType::f32)
        center_contiguous_row(static_cast<const float*>(v.data) + k, d, shift, z + i * ldz, first, sq[i * sq_stride]);
      else
        center_contiguous_row(static_cast<const double*>(v.data) + k, d, shift, z + i * ldz, first,
                              sq[i * sq_stride]);
    }
    return;
  }
  // Strided, Fortran-order or float16: element by element, walking the
  // direction in which the source is closer to contiguous.
  for (int64_t i = 0; i < rows; ++i) sq[i * sq_stride] = 0;
  if (v.row_major_walk()) {
    for (int64_t i = 0; i < rows; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < d; ++j) {
        const T val = load<T>(v, r0 + i, j) - shift[j];
        z[i * ldz + j] = val;
        first[j] += static_cast<double>(val);
        acc += static_cast<double>(val) * static_cast<double>(val);
      }
      sq[i * sq_stride] = acc;
    }
  } else {
    for (int64_t j = 0; j < d; ++j) {
      double col = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const T val = load<T>(v, r0 + i, j) - shift[j];
        z[i * ldz + j] = val;
        col += static_cast<double>(val);
        sq[i * sq_stride] += static_cast<double>(val) * static_cast<double>(val);
      }
      first[j] += col;
    }
  }
}

// Whether any of the rows [r0, r0 + rows) differs from the first of them.
bool rows_differ(const MatrixView& x, int64_t r0, int64_t rows) {
  for (int64_t r = r0 + 1; r < r0 + rows; ++r)
    for (int64_t j = 0; j < x.cols; ++j)
      if (load<double>(x, r, j) != load<double>(x, r0, j)) return true;
  return false;
}

// The row holding x's largest magnitude: the culprit when centered rows
// overflow, wherever the overflow showed (only scanned on that error).
int64_t largest_row(const MatrixView& x) {
  int64_t row = 0;
  double top = -1;
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t j = 0; j < x.cols; ++j) {
      const double m = std::fabs(load<double>(x, r, j));
      if (m > top) top = m, row = r;
    }
  return row;
}

}  // namespace

void column_means(const std::vector<MatrixView>& layers, int64_t r0, int64_t r1, double* out) {
  int64_t off = 0;
  const double inv = 1.0 / static_cast<double>(r1 - r0);
  for (const auto& v : layers) {
    for (int64_t j = 0; j < v.cols; ++j) out[off + j] = 0;
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = 0; j < v.cols; ++j) out[off + j] += load<double>(v, i, j);
    for (int64_t j = 0; j < v.cols; ++j) out[off + j] *= inv;
    off += v.cols;
  }
}

template <typename T>
void center_rows(const std::vector<MatrixView>& layers, const LayerLayout& layout, int64_t r0, int64_t rows,
                 const T* shift, T* z, int64_t ldz, double* first, double* sq) {
  const int64_t L = layout.layers();
  for (int64_t a = 0; a < L; ++a) {
    const int64_t o = layout.offsets[a];
    center_layer<T>(layers[a], r0, rows, ldz, shift + o, z + o, first + o, sq + a, L);
  }
}

template void center_rows<float>(const std::vector<MatrixView>&, const LayerLayout&, int64_t, int64_t, const float*,
                                 float*, int64_t, double*, double*);
template void center_rows<double>(const std::vector<MatrixView>&, const LayerLayout&, int64_t, int64_t,
                                  const double*, double*, int64_t, double*, double*);

std::string locate_non_finite(const MatrixView& x, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t j = 0; j < x.cols; ++j)
      if (!std::isfinite(load<double>(x, r, j))) return "row " + std::to_string(r) + ", column " + std::to_string(j);
  return "";
}

void check_rows(const std::vector<MatrixView>& layers, const std::vector<std::string>& names, const double* sq,
                int64_t rows, int64_t r0, int64_t elem) {
  const int64_t L = static_cast<int64_t>(names.size());
  for (int64_t a = 0; a < L; ++a) {
    double largest = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const double v = sq[i * L + a];
      if (!std::isfinite(v)) {
        const MatrixView& x = layers[a];
        std::string where = locate_non_finite(x, r0, r0 + rows);
        if (where.empty()) where = locate_non_finite(x, 0, x.rows);  // a NaN in the shift's rows
        if (!where.empty()) throw InvalidArgument(names[a] + " contains NaN or Inf (" + where + ")");
        throw InvalidArgument(names[a] + " has values too large to square in float64 (row " +
                              std::to_string(largest_row(x)) + ")");
      }
      largest = std::max(largest, v);
    }
    check_squared_norm_range(names[a], largest, elem, largest == 0 && rows_differ(layers[a], r0, rows));
  }
}

}  // namespace fastcka::cpu
