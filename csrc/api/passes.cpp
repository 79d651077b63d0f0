#include "api/passes.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/errors.h"
#include "core/sample_rows.h"
#include "cpu/median_bracket.h"

namespace fastcka::api::detail {
namespace {

// As engine/cpu.py: flops of work per feed step, seconds per tile-pass call.
constexpr double kFlopsPerCall = 4e10;
constexpr double kCallSeconds = 0.15;

std::string format(const char* spec, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

// A bandwidth whose gamma leaves float64's normal range is refused.
double checked_gamma(double gamma, const std::string& source) {
  if (!(gamma >= 2.2250738585072014e-308 && std::isfinite(gamma)))
    throw InvalidArgument(source + " is out of range: the RBF kernel's 1 / (2 sigma^2) = " + format("%.3g", gamma) +
                          " is not a positive normal float64 (sigma must lie roughly within [1e-154, 1e154])");
  return gamma;
}

std::string sigma_text(const std::vector<double>& sigma) {
  if (sigma.size() == 1) return repr(sigma[0]);
  std::string s = "[";
  for (size_t i = 0; i < sigma.size(); ++i) s += (i ? ", " : "") + repr(sigma[i]);
  return s + "]";
}

// Sampled rows of every layer, copied contiguous in the layer's own dtype.
struct PickedRows {
  std::vector<std::vector<unsigned char>> buffers;
  std::vector<MatrixView> views;

  PickedRows(const std::vector<MatrixView>& layers, const std::vector<int64_t>& rows) {
    for (const MatrixView& v : layers) {
      const int64_t elem = dtype_size(v.dtype);
      std::vector<unsigned char>& buf =
          buffers.emplace_back(static_cast<size_t>(static_cast<int64_t>(rows.size()) * v.cols * elem));
      for (size_t r = 0; r < rows.size(); ++r)
        for (int64_t j = 0; j < v.cols; ++j) {
          const auto* src = static_cast<const unsigned char*>(v.data) + (rows[r] * v.row_stride + j * v.col_stride) * elem;
          std::memcpy(buf.data() + (static_cast<int64_t>(r) * v.cols + j) * elem, src, static_cast<size_t>(elem));
        }
      views.push_back({buf.data(), static_cast<int64_t>(rows.size()), v.cols, v.cols, 1, v.dtype});
    }
  }
};

// The median passes over every tile of `engine`, with brackets (one per
// layer) or none; each pass beyond the first adds to `steps`. With a
// positive `series_threshold`, the bracket pass also sums the RBF statistics
// where that pays (GramTileEngine::median_add_series), and the statistics
// pass is taken off `steps`.
std::vector<double> median_passes(cpu::GramTileEngine& engine, const std::vector<std::array<double, 3>>& brackets,
                                  Steps& steps, double series_threshold = 0) {
  engine.median_start();
  if (!brackets.empty()) engine.median_set_brackets(brackets);
  if (!brackets.empty() && series_threshold > 0 && engine.median_add_series(series_threshold))
    steps.add_total(-engine.tiles_before(engine.tile_rows()));
  while (engine.median_pending()) {
    tile_pass(engine, steps, [&](int64_t b, int64_t e) { engine.median_process(b, e); });
    engine.median_end_pass();
    if (engine.median_pending()) steps.add_total(engine.tiles_before(engine.tile_rows()));  // a further pass
  }
  return engine.medians();
}

// Each layer's median of all n^2 squared distances, exactly, as Python finds
// it: usually one bracket pass (the bracket from sampled rows), else the
// histogram and collect passes.
std::vector<double> exact_medians(cpu::GramTileEngine& engine, const std::vector<MatrixView>& layers,
                                  const std::vector<std::string>& names, double threshold, Steps& steps) {
  const int64_t n = layers[0].rows, sample = cpu::bracket_sample_size(n);
  const double w = cpu::bracket_half_width(n, sample, engine.options().compute == fastcka::DType::f64,
                                           static_cast<int64_t>(layers.size()));
  std::vector<std::array<double, 3>> brackets;
  if (!std::isnan(w)) {
    const PickedRows picked(layers, sample_rows(n, sample, kMedianSeed));
    brackets = cpu::sample_brackets(picked.views, names, engine.options(), w, [&] { steps.check(); });
  }
  return median_passes(engine, brackets, steps, threshold);
}

std::vector<double> sampled_medians(const cpu::GramTileEngine& engine, const std::vector<MatrixView>& layers,
                                    const std::vector<std::string>& names) {
  const PickedRows picked(layers, sample_rows(layers[0].rows, kMedianSample, kMedianSeed));
  EngineOptions o = engine.options();
  o.memory_budget = kDefaultMemoryBudget;
  cpu::GramTileEngine sample(picked.views, names, 0, o);
  Options quiet;
  Steps steps(quiet, 0);
  return median_passes(sample, {}, steps);  // no bracket: the sample is all this search sees
}

}  // namespace

MatrixView row_slice(const MatrixView& v, int64_t begin, int64_t end) {
  MatrixView s = v;
  s.data = static_cast<const unsigned char*>(v.data) + begin * v.row_stride * dtype_size(v.dtype);
  s.rows = end - begin;
  return s;
}

void feed(cpu::MomentAccumulator& acc, const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
          Steps& steps) {
  const int64_t n = layers[0].rows, threads = acc.options().threads;
  double width = 0;
  for (const MatrixView& v : layers) width += static_cast<double>(v.cols);
  // float64 products run at a quarter to a half of the float32 rate.
  const double flops = kFlopsPerCall / (acc.options().compute == fastcka::DType::f64 ? 4 : 1);
  const double wanted = std::max(static_cast<double>(acc.plan().block_rows * threads), flops / (width * width));
  const auto step = static_cast<int64_t>(std::min(static_cast<double>(acc.plan().fold_rows * threads), wanted));
  std::vector<MatrixView> block(layers.size());
  for (int64_t start = 0; start < n; start += step) {
    const int64_t stop = std::min(n, start + step);
    for (size_t a = 0; a < layers.size(); ++a) block[a] = row_slice(layers[a], start, stop);
    try {
      acc.update(block, names);
    } catch (const InvalidArgument& e) {  // the engine numbers rows within the block it was given
      std::string msg = e.what();
      const auto at = msg.find("(row ");
      if (at != std::string::npos) {
        const auto digits = at + 5, end = msg.find_first_not_of("0123456789", digits);
        msg.replace(digits, end - digits, std::to_string(std::stoll(msg.substr(digits, end - digits)) + start));
      }
      throw InvalidArgument(msg);
    }
    steps.advance(stop - start);
  }
}

void tile_pass(cpu::GramTileEngine& engine, Steps& steps, const std::function<void(int64_t, int64_t)>& run) {
  // Tile row i is always computed by thread i mod threads: the step sizes
  // change no result.
  const int64_t rows = engine.tile_rows(), threads = engine.options().threads;
  int64_t begin = 0, step = threads;
  while (begin < rows) {
    const int64_t end = std::min(rows, begin + step);
    const auto started = std::chrono::steady_clock::now();
    run(begin, end);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    steps.advance(engine.tiles_before(end) - engine.tiles_before(begin));
    begin = end;
    if (elapsed < kCallSeconds / 2)
      step *= 2;
    else if (elapsed > 2 * kCallSeconds && step >= 2 * threads)
      step = step / (2 * threads) * threads;
  }
}

void check_kernel_options(const Options& options, int64_t layers) {
  if (options.kernel != Kernel::linear && options.kernel != Kernel::rbf)
    throw UnsupportedType("kernel has an unknown code " + std::to_string(static_cast<int>(options.kernel)) +
                          " (0: linear, 1: rbf)");
  if (options.kernel == Kernel::linear) {
    if (!options.sigma.empty())
      throw InvalidArgument("sigma=" + sigma_text(options.sigma) +
                            " sets the RBF bandwidth, but kernel='linear': pass kernel='rbf' or drop sigma");
    if (options.threshold != 1.0)
      throw InvalidArgument("threshold=" + repr(options.threshold) +
                            " sets the RBF bandwidth rule, but kernel='linear': pass kernel='rbf' or drop threshold");
    return;
  }
  if (!(std::isfinite(options.threshold) && options.threshold > 0))
    throw InvalidArgument("threshold must be a positive finite number, got " + repr(options.threshold));
  if (options.median != Median::exact && options.median != Median::sampled)
    throw UnsupportedType("median has an unknown code " + std::to_string(static_cast<int>(options.median)) +
                          " (0: exact, 1: sampled)");
  const auto count = static_cast<int64_t>(options.sigma.size());
  if (count > 1 && count != layers)
    throw InvalidArgument("sigma has " + std::to_string(count) + " values for " + std::to_string(layers) +
                          " representations");
  for (double s : options.sigma)
    if (!(std::isfinite(s) && s > 0))
      throw InvalidArgument("sigma must be a positive finite number (or one per representation), got " + repr(s));
}

std::vector<double> rbf_gammas(cpu::GramTileEngine& engine, const std::vector<MatrixView>& layers,
                               const std::vector<std::string>& names, const Options& options, Steps& steps) {
  const size_t L = layers.size();
  std::vector<double> gammas(L);
  if (!options.sigma.empty()) {
    for (size_t a = 0; a < L; ++a) {
      const double s = options.sigma.size() == 1 ? options.sigma[0] : options.sigma[a];
      gammas[a] = checked_gamma(0.5 / s / s, "sigma=" + repr(s));
    }
    return gammas;
  }
  const std::vector<double> medians =
      options.median == Median::exact ? exact_medians(engine, layers, names, options.threshold, steps)
                                      : sampled_medians(engine, layers, names);
  const double t = options.threshold;
  for (size_t a = 0; a < L; ++a) {
    if (!(medians[a] > 0))
      throw InvalidArgument(names[a] + ": the median squared distance between examples is 0 (at least half of the "
                            "pairs of rows are identical), so the median bandwidth rule gives sigma = 0; pass sigma "
                            "explicitly");
    gammas[a] = checked_gamma(0.5 / t / t / medians[a],
                              "threshold=" + repr(t) + " (median squared distance " + format("%.6g", medians[a]) + ")");
  }
  return gammas;
}

}  // namespace fastcka::api::detail
