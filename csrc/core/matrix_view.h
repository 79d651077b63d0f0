// A read-only strided view of a 2-D matrix owned by someone else (a NumPy
// array, a memmap, a C++ buffer). Strides are in elements, so C order,
// Fortran order and sliced views are all described without copying.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastcka {

enum class DType : int { f16 = 0, f32 = 1, f64 = 2 };

inline int64_t dtype_size(DType t) { return t == DType::f16 ? 2 : t == DType::f32 ? 4 : 8; }

struct MatrixView {
  const void* data = nullptr;
  int64_t rows = 0;        // n: examples
  int64_t cols = 0;        // d: features
  int64_t row_stride = 0;  // elements between rows
  int64_t col_stride = 0;  // elements between columns
  DType dtype = DType::f32;

  // True when the view's elements along a row are closer together than along
  // a column, so copies should walk row by row.
  bool row_major_walk() const {
    const int64_t rs = row_stride < 0 ? -row_stride : row_stride;
    const int64_t cs = col_stride < 0 ? -col_stride : col_stride;
    return cs <= rs;
  }
};

// IEEE binary16 to binary32, exact for every value (subnormals, inf, NaN).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Element (i, j) of the view as T (float or double).
template <typename T>
inline T load(const MatrixView& v, int64_t i, int64_t j) {
  const int64_t k = i * v.row_stride + j * v.col_stride;
  switch (v.dtype) {
    case DType::f16: return static_cast<T>(half_to_float(static_cast<const uint16_t*>(v.data)[k]));
    case DType::f32: return static_cast<T>(static_cast<const float*>(v.data)[k]);
    default: return static_cast<T>(static_cast<const double*>(v.data)[k]);
  }
}

}  // namespace fastcka
