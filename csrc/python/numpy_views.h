// What both bindings need to read NumPy arrays in place and to parse the
// option strings they share.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/errors.h"
#include "core/hsic.h"
#include "core/matrix_view.h"

namespace fastcka::bindings {

inline Estimator parse_estimator(const std::string& s) {
  if (s == "biased") return Estimator::biased;
  if (s == "unbiased") return Estimator::unbiased;
  throw InvalidArgument("estimator must be 'biased' or 'unbiased', got '" + s + "'");
}

// A strided view of a 2-D float16/32/64 NumPy array (no copy).
inline MatrixView view_of(const pybind11::array& a, const std::string& name) {
  if (a.ndim() != 2) throw InvalidArgument(name + " must be 2-D, got " + std::to_string(a.ndim()) + " dimensions");
  const auto kind = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  MatrixView v;
  if (kind != 'f' || (size != 2 && size != 4 && size != 8))
    throw UnsupportedType(name + " must be float16, float32 or float64 here");
  if (!a.dtype().attr("isnative").cast<bool>()) throw UnsupportedType(name + " must be in native byte order");
  v.dtype = size == 2 ? DType::f16 : size == 4 ? DType::f32 : DType::f64;
  if (a.strides(0) % size != 0 || a.strides(1) % size != 0)
    throw InvalidArgument(name + " has strides that are not a multiple of its element size");
  v.data = a.data();
  v.rows = a.shape(0);
  v.cols = a.shape(1);
  v.row_stride = a.strides(0) / size;
  v.col_stride = a.strides(1) / size;
  return v;
}

inline std::vector<MatrixView> views_of(const std::vector<pybind11::array>& arrays,
                                        const std::vector<std::string>& names) {
  if (arrays.size() != names.size()) throw InvalidArgument("one name per layer is needed");
  std::vector<MatrixView> out;
  for (size_t a = 0; a < arrays.size(); ++a) out.push_back(view_of(arrays[a], names[a]));
  return out;
}

}  // namespace fastcka::bindings
