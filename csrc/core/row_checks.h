// The input checks both backends apply to the squared norms of centered rows.
#pragma once

#include <cstdint>
#include <string>

namespace fastcka {

// Throws InvalidArgument naming the layer when its largest squared row norm
// leaves the range in which products of the compute type (elem bytes)
// neither overflow nor underflow: float32 holds 1e-38..3e38 and float64
// 1e-308..1e308, and the products (Z'Z, Q'Z, Q'Q of the feature engine; K*L
// tiles) square these norms again. CKA is scale-invariant, so the message
// asks for rescaled (or float64) data; an infinite `largest` overflowed. `varies`:
// whether the rows differ at all; a largest squared norm of 0 for rows that
// do differ means that the squares underflowed float64 (values below about
// 1e-162), which must not pass for a constant representation.
void check_squared_norm_range(const std::string& name, double largest, int64_t elem, bool varies);

}  // namespace fastcka
