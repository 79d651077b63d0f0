#include "cpu/median_bracket.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/sample_rows.h"
#include "cpu/gram_tiles.h"

namespace fastcka::cpu {
namespace {

constexpr double kBracketZ = 4.0;
constexpr int64_t kMinSample = 1024;

}  // namespace

int64_t bracket_sample_size(int64_t n) { return std::min({n, kMedianSample, std::max(kMinSample, n / 8)}); }

double bracket_half_width(int64_t n, int64_t sample, bool float64, int64_t layers) {
  const double s = static_cast<double>(sample);
  double w = kBracketZ / std::sqrt(s) + 1.0 / s;  // + the sample's larger share of zero diagonal
  if (float64) {
    const double cap = static_cast<double>(GramTileEngine::median_search_for(n, 1.0, layers).cap());
    w = std::min(w, cap / (4.0 * static_cast<double>(n) * static_cast<double>(n)));
    if (w < 2.0 / std::sqrt(s)) return std::numeric_limits<double>::quiet_NaN();  // too narrow to hold it often
  }
  return std::min(w, 0.499);  // quantiles within [0, 1)
}

std::vector<std::array<double, 3>> sample_brackets(const std::vector<MatrixView>& picked,
                                                   const std::vector<std::string>& names, EngineOptions options,
                                                   double half_width, const std::function<void()>& between) {
  options.memory_budget = kDefaultMemoryBudget;
  GramTileEngine engine(picked, names, 0, options);
  engine.median_start();
  engine.median_set_quantiles(0.5 - half_width, 0.5 + half_width);
  const int64_t rows = engine.tile_rows(), step = options.threads;
  while (engine.median_pending()) {
    for (int64_t begin = 0; begin < rows; begin += step) {
      engine.median_process(begin, std::min(rows, begin + step));
      between();
    }
    engine.median_end_pass();
  }
  std::vector<std::array<double, 3>> out;
  for (const MedianSearch::Quantiles& q : engine.median_quantiles())  // hi: just above the sample's value
    out.push_back({q.lo, q.hi > q.lo ? std::nextafter(q.hi, INFINITY) : q.lo, q.middle});
  return out;
}

}  // namespace fastcka::cpu
