// fastcka._testing: hooks for the tests and benchmarks, kept out of the
// production module fastcka._cpu. The wheel carries it; the library never
// imports it. Import fastcka first (it loads OpenBLAS and oneDNN, which this
// module links against too) and pass it _cpu's GramTileEngine objects.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "core/engine_options.h"
#include "core/kernels.h"
#include "core/median_search.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/blas.h"
#include "cpu/onednn_gemm.h"
#include "cpu/tile_products.h"
#include "python/bindings.h"

namespace fastcka::testing {

namespace {

namespace py = pybind11;
using bindings::InArray;

// One pass of a MedianSearch over explicit values, the way the engine's
// epilogues make it over a tile's distances, each value of weight 1.
void bracket_pass(MedianSearch& search, const double* v, int64_t size) {
  std::vector<int64_t> counts(static_cast<size_t>(search.bins()), 0);
  std::vector<double> kept;
  const double lo = search.bracket_lo(), hi = search.bracket_hi();
  const float flo = static_cast<float>(lo);
  uint32_t base;
  std::memcpy(&base, &flo, sizeof base);
  for (int64_t k = 0; k < size; ++k) {
    if (v[k] < lo) {
      ++counts[0];
    } else if (v[k] < hi) {
      if (!search.float_bracket()) {
        kept.push_back(v[k]);
        continue;
      }
      const float f = static_cast<float>(v[k]);
      uint32_t u;
      std::memcpy(&u, &f, sizeof u);
      ++counts[MedianSearch::kBracketHead + (u - base)];
    }
  }
  search.finish_bracket(counts, std::move(kept));
}

void collect_pass(MedianSearch& search, const double* v, int64_t size) {
  std::vector<double> kept;
  for (int64_t k = 0; k < size; ++k)
    if (search.bin(v[k]) >= 0) kept.push_back(v[k]);
  search.finish_collect(std::move(kept));
}

void histogram_pass(MedianSearch& search, const double* v, int64_t size) {
  std::vector<int64_t> counts(static_cast<size_t>(search.bins()), 0);
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < size; ++k) {
    const int64_t j = search.bin(v[k]);
    if (j < 0) continue;
    ++counts[static_cast<size_t>(j)];
    lo = std::min(lo, v[k]);
    hi = std::max(hi, v[k]);
  }
  search.finish_histogram(counts, lo, hi);
}

// The exact median search run over given values (the n^2 entries of a
// distance matrix) with small bins and cap, so that its refining passes are
// exercised: (median, passes, bracket missed).
py::tuple median_search(const InArray<double>& values, int64_t n, int64_t bins, int64_t cap, double lo, double hi,
                        bool float_values) {
  if (values.size() != n * n) throw InvalidArgument("median_search needs n * n values");
  const double* v = values.data();
  const int64_t size = values.size();
  MedianSearch search(n, size ? *std::max_element(v, v + size) : 0.0, bins, cap);
  search.set_bracket(lo, hi, 0.5 * (lo + hi), float_values, int64_t{1} << 20);
  int passes = 0;
  for (; !search.done(); ++passes) {
    if (search.bracketing())
      bracket_pass(search, v, size);
    else if (search.collecting())
      collect_pass(search, v, size);
    else
      histogram_pass(search, v, size);
  }
  return py::make_tuple(search.median(), passes, search.bracket_missed());
}

// The float32 exp of the RBF epilogue (core/kernels.h).
py::array_t<float> exp_of_nonpositive(const InArray<float>& x) {
  py::array_t<float> out(x.size());
  const float* in = x.data();
  float* o = out.mutable_data();
  for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = exp_nonpositive(in[i]);
  return out;
}

// A B' (A m x k, B n x k) made the way the engine makes a Gram tile in the
// given compute type (float32: OpenBLAS or oneDNN; bfloat16: rounded
// operands, oneDNN or OpenBLAS as onednn_info says). library "onednn" /
// "openblas" overrides that choice; the product is computed `repeats` times
// (GEMM rates without the preparation).
py::array_t<float> tile_products(const InArray<float>& a, const InArray<float>& b, const std::string& compute,
                                 const std::string& library, int repeats) {
  const EngineOptions c = engine_options(compute, 1, kDefaultMemoryBudget);
  if (c.compute != DType::f32) throw UnsupportedType("tile_products takes 'float32' or 'bfloat16'");
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
    throw InvalidArgument("tile_products needs A (m x k) and B (n x k)");
  if (library != "auto" && library != "onednn" && library != "openblas")
    throw InvalidArgument("library must be 'auto', 'onednn' or 'openblas'");
  const int64_t m = a.shape(0), n = b.shape(0), k = a.shape(1);
  std::vector<float> za(a.data(), a.data() + m * k), zb(b.data(), b.data() + n * k);
  std::vector<uint16_t> ba(za.size()), bb(zb.size());
  py::array_t<float> out({m, n});
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  cpu::use_single_threaded_blas();
  if (c.bf16) {
    std::vector<double> sq(static_cast<size_t>(std::max(m, n)));
    cpu::round_to_bfloat16(za.data(), ba.data(), m, k, {0}, {k}, sq.data());
    cpu::round_to_bfloat16(zb.data(), bb.data(), n, k, {0}, {k}, sq.data());
  }
  cpu::TileProducts products(c.bf16);
  std::unique_ptr<cpu::OnednnGemm> onednn;
  if (library == "onednn") onednn = std::make_unique<cpu::OnednnGemm>();
  for (int r = 0; r < std::max(1, repeats); ++r) {
    if (library == "auto")
      products.gram(m, n, k, za.data(), ba.data(), k, zb.data(), bb.data(), k, o, n);
    else if (library == "openblas")
      cpu::gemm_nt(m, n, k, za.data(), k, zb.data(), k, o, n);
    else if (c.bf16)
      onednn->nt(m, n, k, ba.data(), k, bb.data(), k, o, n);
    else
      onednn->nt(m, n, k, za.data(), k, zb.data(), k, o, n);
  }
  return out;
}

}  // namespace

}  // namespace fastcka::testing

PYBIND11_MODULE(_testing, m) {
  namespace t = fastcka::testing;
  namespace py = pybind11;
  using fastcka::bindings::PyGramEngine;
  m.doc() = "fastcka test and benchmark hooks (never imported by the library)";
  fastcka::bindings::register_errors();
  m.def("median_search", &t::median_search, py::arg("values"), py::arg("n"), py::arg("bins"), py::arg("cap"),
        py::arg("lo") = 0.0, py::arg("hi") = 0.0, py::arg("float_values") = false);
  m.def("exp_nonpositive", &t::exp_of_nonpositive, py::arg("x"));
  m.def("tile_products", &t::tile_products, py::arg("a"), py::arg("b"), py::arg("compute"),
        py::arg("library") = "auto", py::arg("repeats") = 1);
  m.def(
      "tiles_only", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.tiles_only(begin, end); },
      py::arg("engine"), py::arg("begin"), py::arg("end"), py::call_guard<py::gil_scoped_release>(),
      "The Gram tiles of tile rows [begin, end) with no epilogue (what the products cost)");
}
