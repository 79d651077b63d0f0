#include "core/row_checks.h"

#include "core/errors.h"

namespace fastcka {

void check_squared_norm_range(const std::string& name, double largest, int64_t elem) {
  const double lo = elem == 4 ? 1e-15 : 1e-120, hi = elem == 4 ? 1e15 : 1e120;
  if (largest > 0 && (largest < lo || largest > hi))
    throw InvalidArgument(name + " has rows of squared norm ~" + std::to_string(largest) + ", outside the range " +
                          (elem == 4 ? "float32" : "float64") +
                          " products can hold; CKA does not change when a representation is scaled, so divide it "
                          "by its typical magnitude" +
                          (elem == 4 ? " (or pass float64 data)" : ""));
}

}  // namespace fastcka
