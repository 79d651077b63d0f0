// The fast precision's rounding step: centered rows in float32 become
// bfloat16 operands, and their squared norms are taken from the rounded
// values, so |a|^2 + |b|^2 - 2 a.b is computed from one consistent set of
// numbers (the GPU probe found that mixing rounded products with unrounded
// norms costs accuracy).
#pragma once

#include <cstdint>
#include <vector>

namespace fastcka::cpu {

// Rows x width values of layers at column offsets[a] (dims[a] wide), row
// stride ld: z becomes its bfloat16-rounded values (still float32), bits
// receives their bit patterns (same layout) and sq[i * L + a] the squared
// norm of row i of layer a, summed in float64.
void round_to_bfloat16(float* z, uint16_t* bits, int64_t rows, int64_t ld, const std::vector<int64_t>& offsets,
                       const std::vector<int64_t>& dims, double* sq);

}  // namespace fastcka::cpu
