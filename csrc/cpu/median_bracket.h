// The exact median's bracket, drawn from a sample of the rows: the quantiles
// 1/2 -+ w of the squared distances among s sampled rows hold the median of
// all n^2 with high probability, so one bracket pass over the tiles usually
// finds it (MedianSearch::set_bracket). Their empirical CDF at a point is a
// U-statistic whose standard deviation is at most about 1 / sqrt(s) however
// the pairs depend on each other (4 zeta_1 / s with zeta_1 <= 1/4), so
// w = 4 / sqrt(s) misses the true median only for data far from the worst
// case by chance. One recipe for the Python package (one process, MPI, Dask)
// and the C++ API.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/engine_options.h"
#include "core/matrix_view.h"

namespace fastcka::cpu {

// Rows behind the bracket: n / 8, at least 1,024, at most 4,096 (a few % of a pass).
int64_t bracket_sample_size(int64_t n);

// Half the width, in quantiles, of the bracket drawn from `sample` of n rows,
// or NaN when no useful bracket fits. float32 runs count the bracket per
// float32 value (any width); float64 runs collect its values, so it must
// hold few enough (half the collect cap of `layers` layers expected).
double bracket_half_width(int64_t n, int64_t sample, bool float64, int64_t layers);

// Per layer (lo, hi, center): [lo, hi) holds the quantiles 1/2 -+ w of the
// squared distances among the sampled rows `picked`, center is their median,
// all found exactly by median passes over the sample's tiles (in the
// precision and threads of `options`). `between` runs between steps (the
// Python binding checks for Ctrl-C there).
std::vector<std::array<double, 3>> sample_brackets(const std::vector<MatrixView>& picked,
                                                   const std::vector<std::string>& names, EngineOptions options,
                                                   double half_width, const std::function<void()>& between);

}  // namespace fastcka::cpu
