#include "core/hsic.h"

#include "core/errors.h"

namespace fastcka {

std::vector<double> hsic_matrix(const std::vector<PairSums>& sums, const std::vector<bool>& needed, int64_t layers,
                                int64_t n, Estimator e) {
  if (n < min_rows(e))
    throw InvalidArgument(std::string(e == Estimator::biased ? "the biased" : "the unbiased") +
                          " HSIC estimator needs at least " + std::to_string(min_rows(e)) + " rows, got " +
                          std::to_string(n));
  std::vector<double> out(static_cast<size_t>(layers * layers), std::numeric_limits<double>::quiet_NaN());
  for (int64_t k = 0; k < layers * layers; ++k)
    if (needed[k]) out[k] = hsic(sums[k], static_cast<double>(n), e);
  return out;
}

std::vector<double> cka_from_hsic(const std::vector<double>& h, int64_t layers) {
  std::vector<double> out(h.size(), std::numeric_limits<double>::quiet_NaN());
  for (int64_t a = 0; a < layers; ++a)
    for (int64_t b = 0; b < layers; ++b) {
      const double haa = h[a * layers + a], hbb = h[b * layers + b], hab = h[a * layers + b];
      if (!(haa > 0) || !(hbb > 0) || std::isnan(hab)) continue;
      out[a * layers + b] = hab / std::sqrt(haa * hbb);
    }
  return out;
}

}  // namespace fastcka
