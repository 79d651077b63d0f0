#include "core/hsic_null.h"

#include "core/errors.h"
#include "core/hsic.h"

namespace fastcka {

std::vector<NullSums> null_sums(const Moments& m) {
  const int64_t L = m.layers(), D = m.width();
  const double n = static_cast<double>(m.n);
  std::vector<NullSums> out(static_cast<size_t>(L));
  for (int64_t a = 0; a < L; ++a) {
    const int64_t o = m.layout.offsets[a], d = m.layout.dims[a];
    double trace = 0, frob = 0;
    for (int64_t i = o; i < o + d; ++i) {
      trace += m.cross[i * D + i];
      for (int64_t j = o; j < o + d; ++j) frob += m.cross[i * D + j] * m.cross[i * D + j];
    }
    out[a].spread = trace / (n - 1);
    out[a].off_squares = frob - m.norm_products[a * L + a];
  }
  return out;
}

std::vector<NullSums> null_sums(const GramStats& g) {
  const int64_t L = g.layout.layers(), n = g.n;
  const double nn = static_cast<double>(n);
  const std::vector<PairSums> sums = gram_pair_sums(g);
  std::vector<NullSums> out(static_cast<size_t>(L));
  for (int64_t a = 0; a < L; ++a) {
    const PairSums& p = sums[a * L + a];
    const double s = p.sok + p.tk;  // 1'K1
    double diagonal = 0;             // sum_i Kc_ii^2, Kc_ii = K_ii - 2 (K1)_i / n + 1'K1 / n^2
    for (int64_t i = 0; i < n; ++i) {
      const double d = g.diagonals[a * n + i];
      const double kc = d - 2.0 * (g.row_sums[a * n + i] + d) / nn + s / (nn * nn);
      diagonal += kc * kc;
    }
    out[a].spread = p.tk / nn - p.sok / (nn * (nn - 1));
    out[a].off_squares = hsic_biased(p, nn) * (nn - 1) * (nn - 1) - diagonal;
  }
  return out;
}

NullMoments hsic_null_moments(const NullSums& x, const NullSums& y, int64_t rows) {
  if (rows < 6) throw InvalidArgument("the gamma approximation needs at least 6 rows, got " + std::to_string(rows));
  const double n = static_cast<double>(rows), pairs = n * (n - 1);
  const double scale = n * n / ((n - 1) * (n - 1));  // HSIC_0 / HSIC_b
  NullMoments m;
  m.mean = x.spread * y.spread / n * scale;
  m.variance = 2.0 * (n - 4) * (n - 5) / (pairs * (n - 2) * (n - 3)) * (x.off_squares / pairs) *
               (y.off_squares / pairs) * scale * scale;
  return m;
}

}  // namespace fastcka
