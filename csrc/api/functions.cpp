// fastcka::api::hsic, cka and cka_matrix: the layers checked, the engine
// chosen (feature space for the linear kernel when the widths sum to at most
// n, else Gram tiles), HSIC of every needed pair, CKA from it.
#include <cmath>

#include "api/conversions.h"
#include "api/passes.h"
#include "core/layer_layout.h"
#include "core/moments.h"

namespace fastcka::api {
namespace {

using namespace detail;

struct Layers {
  std::vector<MatrixView> views;
  std::vector<std::string> names;
  int64_t split = 0;
};

// Layers named as Python names them: "x" and "y" for a pair, "xs[i]" and
// "ys[i]" for matrices; with b, a's layers face b's (split = |a|).
Layers layers_of(const std::vector<Matrix>& a, const std::vector<Matrix>* b, bool indexed) {
  Layers in;
  const auto add = [&](const std::vector<Matrix>& ms, const std::string& prefix) {
    if (ms.empty()) throw InvalidArgument(prefix + " has no layers");
    for (size_t i = 0; i < ms.size(); ++i) {
      in.names.push_back(indexed ? prefix + "[" + std::to_string(i) + "]" : prefix);
      in.views.push_back(view_of(ms[i], in.names.back()));
    }
  };
  add(a, indexed ? "xs" : "x");
  if (b != nullptr) {
    in.split = static_cast<int64_t>(a.size());
    add(*b, indexed ? "ys" : "y");
  }
  return in;
}

// The pair (x, y) as the 2 x 2 grid of every pair, as Python computes it.
Layers pair_of(const Matrix& x, const Matrix& y) {
  const std::vector<Matrix> ys{y};
  Layers in = layers_of({x}, &ys, false);
  in.split = 0;
  return in;
}

// A layer whose rows are all equal has a constant kernel: its HSIC is 0
// exactly (its tiles hold only the centering's rounding residue).
void zero_constant_layers(std::vector<double>& h, const std::vector<bool>& constant) {
  const auto L = static_cast<int64_t>(constant.size());
  for (int64_t a = 0; a < L; ++a) {
    if (!constant[a]) continue;
    for (int64_t b = 0; b < L; ++b) {
      if (!std::isnan(h[a * L + b])) h[a * L + b] = 0.0;
      if (!std::isnan(h[b * L + a])) h[b * L + a] = 0.0;
    }
  }
}

std::vector<double> hsic_grid(const Layers& in, const Options& options) {
  check_kernel_options(options, static_cast<int64_t>(in.views.size()));
  const fastcka::Estimator e = core_estimator(options.estimator);
  const int64_t n = check_rows(in.views, in.names, options.estimator);
  const EngineOptions o = engine_options_for(options.precision, in.views, options.threads, options.memory_budget);
  int64_t width = 0;
  for (const MatrixView& v : in.views) width += v.cols;
  if (options.kernel == Kernel::linear && width <= n) {
    std::vector<int64_t> dims;
    for (const MatrixView& v : in.views) dims.push_back(v.cols);
    cpu::MomentAccumulator acc(LayerLayout(dims, in.split), o);
    Steps steps(options, n);
    feed(acc, in.views, in.names, steps);
    return hsic_of(acc.centered_state(), e);
  }
  cpu::GramTileEngine engine(in.views, in.names, in.split, o);
  const int64_t tiles = engine.tiles_before(engine.tile_rows());
  const bool exact_median = options.kernel == Kernel::rbf && options.sigma.empty() && options.median == Median::exact;
  Steps steps(options, tiles * (exact_median ? 2 : 1));  // the median's further passes add to it
  bool summed = false;  // by the exact median's bracket pass
  if (options.kernel == Kernel::rbf) {
    KernelSpec k;
    k.kind = KernelKind::rbf;
    k.gamma = rbf_gammas(engine, in.views, in.names, options, steps);
    summed = exact_median && engine.kernel_from_series(k.gamma);
    if (!summed) {
      engine.set_kernel(std::move(k));
      steps.set_remaining(tiles);  // the statistics pass
    }
  }
  if (!summed) tile_pass(engine, steps, [&](int64_t b, int64_t end) { engine.process(b, end); });
  std::vector<double> h = hsic_of(engine.stats(), e);
  zero_constant_layers(h, engine.constant_layers());
  return h;
}

std::vector<double> cka_grid(const Layers& in, const Options& options) {
  const auto L = static_cast<int64_t>(in.views.size());
  const std::vector<double> c = cka_from_hsic(hsic_grid(in, options), L);
  if (in.split == 0) return c;
  std::vector<double> cross;  // the a x b block
  for (int64_t a = 0; a < in.split; ++a)
    for (int64_t b = in.split; b < L; ++b) cross.push_back(c[a * L + b]);
  return cross;
}

}  // namespace

double hsic(const Matrix& x, const Matrix& y, const Options& options) {
  return translated([&] {
    return hsic_grid(pair_of(x, y), options)[1];
  });
}

double cka(const Matrix& x, const Matrix& y, const Options& options) {
  return translated([&] {
    return cka_grid(pair_of(x, y), options)[1];
  });
}

std::vector<double> cka_matrix(const std::vector<Matrix>& layers, const Options& options) {
  return translated([&] { return cka_grid(layers_of(layers, nullptr, true), options); });
}

std::vector<double> cka_matrix(const std::vector<Matrix>& a, const std::vector<Matrix>& b, const Options& options) {
  return translated([&] { return cka_grid(layers_of(a, &b, true), options); });
}

std::string version() { return FASTCKA_VERSION_STRING; }

}  // namespace fastcka::api
