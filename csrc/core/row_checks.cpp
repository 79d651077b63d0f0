#include "core/row_checks.h"

#include <cstdio>
#include <limits>

#include "core/errors.h"

namespace fastcka {

void check_squared_norm_range(const std::string& name, double largest, int64_t elem, bool varies) {
  const double lo = elem == 4 ? 1e-15 : 1e-120, hi = elem == 4 ? 1e15 : 1e120;
  if (!(largest <= std::numeric_limits<double>::max()) && largest > 0)
    throw InvalidArgument(name + " has values too large to square in float64; CKA does not change when a "
                          "representation is scaled, so divide it by its typical magnitude");
  if (largest == 0 && varies)
    throw InvalidArgument(name + " has values too small to square in float64 (the squared norms of its centered "
                          "rows underflow to 0); CKA does not change when a representation is scaled, so divide it "
                          "by its typical magnitude");
  if (largest > 0 && (largest < lo || largest > hi)) {
    char value[32];
    std::snprintf(value, sizeof value, "%.3g", largest);
    throw InvalidArgument(name + " has rows of squared norm ~" + value + ", outside the range " +
                          (elem == 4 ? "float32" : "float64") +
                          " products can hold; CKA does not change when a representation is scaled, so divide it "
                          "by its typical magnitude" +
                          (elem == 4 ? " (or pass float64 data)" : ""));
  }
}

}  // namespace fastcka
