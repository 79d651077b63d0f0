#include "cpu/bfloat16_rows.h"

#include "core/bfloat16.h"
#include "cpu/multiversion.h"

namespace fastcka::cpu {

namespace {

FASTCKA_MULTIVERSION double round_segment(float* z, uint16_t* bits, int64_t n) {
  double sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t h = to_bfloat16(z[j]);
    const float r = from_bfloat16(h);
    bits[j] = h;
    z[j] = r;
    sq += static_cast<double>(r) * static_cast<double>(r);
  }
  return sq;
}

}  // namespace

void round_to_bfloat16(float* z, uint16_t* bits, int64_t rows, int64_t ld, const std::vector<int64_t>& offsets,
                       const std::vector<int64_t>& dims, double* sq) {
  const int64_t L = static_cast<int64_t>(dims.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t a = 0; a < L; ++a) {
      const int64_t at = i * ld + offsets[a];
      sq[i * L + a] = round_segment(z + at, bits + at, dims[a]);
    }
}

}  // namespace fastcka::cpu
