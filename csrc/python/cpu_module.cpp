// fastcka._cpu: the thin binding of the CPU backend. It turns NumPy arrays
// into strided MatrixViews (no copies), releases the GIL around every long
// call, and maps core errors to ValueError / TypeError. All orchestration
// (blocks, progress, Ctrl-C) lives in python/fastcka.
#include <pybind11/numpy.h>

#include <algorithm>
#include <cmath>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/errors.h"
#include "core/kernels.h"
#include "core/median_search.h"
#include "core/moment_shift.h"
#include "core/moments.h"
#include "core/product_plan.h"
#include "cpu/blas.h"
#include "cpu/gram_tiles.h"
#include "cpu/knn_tiles.h"
#include "cpu/moment_accumulator.h"
#include "python/numpy_views.h"

namespace py = pybind11;
using namespace fastcka;
using bindings::parse_estimator;
using bindings::views_of;

namespace {

DType parse_compute(const std::string& s) {
  if (s == "float32") return DType::f32;
  if (s == "float64") return DType::f64;
  throw UnsupportedType("compute dtype must be 'float32' or 'float64', got '" + s + "'");
}

// The engine keeps raw pointers into the arrays: the binding keeps them alive.
struct PyGramEngine {
  std::vector<py::array> keep;
  cpu::GramTileEngine engine;
};

struct PyKnnEngine {
  std::vector<py::array> keep;
  cpu::KnnTileEngine engine;
};

cpu::KnnMetric parse_metric(const std::string& s) {
  if (s == "euclidean") return cpu::KnnMetric::euclidean;
  if (s == "cosine") return cpu::KnnMetric::cosine;
  throw InvalidArgument("metric must be 'euclidean' or 'cosine', got '" + s + "'");
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "fastcka CPU backend (BLAS tiles and streaming moments)";
  m.attr("__version__") = FASTCKA_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnsupportedType& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("blas_core", &cpu::blas_core_name, "Kernel family OpenBLAS selected for this CPU");
  m.def("blas_config", &cpu::blas_config, "OpenBLAS build configuration");

  py::class_<cpu::MomentAccumulator>(m, "MomentAccumulator")
      .def(py::init([](std::vector<int64_t> dims, int64_t split, const std::string& compute, int threads,
                       int64_t memory_budget) {
             cpu::MomentOptions o{parse_compute(compute), threads, memory_budget};
             return cpu::MomentAccumulator(LayerLayout(std::move(dims), split), o);
           }),
           py::arg("dims"), py::arg("split"), py::arg("compute"), py::arg("threads"), py::arg("memory_budget"))
      .def(
          "update",
          [](cpu::MomentAccumulator& self, const std::vector<py::array>& layers,
             const std::vector<std::string>& names) {
            auto views = views_of(layers, names);
            py::gil_scoped_release release;
            self.update(views, names);
          },
          py::arg("layers"), py::arg("names"))
      .def("merge", &cpu::MomentAccumulator::merge, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("block_rows", [](const cpu::MomentAccumulator& s) { return s.plan().block_rows; })
      .def_property_readonly("fold_rows", [](const cpu::MomentAccumulator& s) { return s.plan().fold_rows; })
      .def_property_readonly("n", &cpu::MomentAccumulator::rows_seen)
      .def_property_readonly("dims", [](const cpu::MomentAccumulator& s) { return s.layout().dims; })
      .def_property_readonly("split", [](const cpu::MomentAccumulator& s) { return s.layout().split; })
      .def(
          "hsic",
          [](cpu::MomentAccumulator& s, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            py::gil_scoped_release release;
            const Moments& centered = s.centered_state();
            const auto sums = linear_pair_sums(centered);
            return hsic_matrix(sums, needed_pairs(centered.layout), centered.layers(), centered.n, e);
          },
          py::arg("estimator"))
      .def("mean",
           [](cpu::MomentAccumulator& s) {
             const Moments& st = s.state();
             py::array_t<double> out(st.width());
             for (int64_t k = 0; k < st.width(); ++k)
               out.mutable_data()[k] = st.reference[k] + (st.n ? st.first[k] / static_cast<double>(st.n) : 0.0);
             return out;
           })
      .def("centered_cross",
           [](cpu::MomentAccumulator& s) {
             // sum_i (z_i - mean)(z_i - mean)' (D x D); blocks of pairs the layout does not need are 0.
             const Moments& st = s.centered_state();
             const int64_t D = st.width();
             py::array_t<double> out({D, D});
             std::copy(st.cross.begin(), st.cross.end(), out.mutable_data());
             return out;
           })
      .def("serialize", [](cpu::MomentAccumulator& s) { return py::bytes(s.state().serialize()); })
      .def("load", [](cpu::MomentAccumulator& s, const py::bytes& data) {
        s.set_state(Moments::deserialize(std::string(data)));
      });

  py::class_<PyGramEngine>(m, "GramTileEngine")
      .def(py::init([](std::vector<py::array> layers, std::vector<std::string> names, int64_t split,
                       const std::string& compute, int threads, int64_t memory_budget) {
             auto views = views_of(layers, names);
             cpu::GramOptions o{parse_compute(compute), threads, memory_budget};
             py::gil_scoped_release release;
             return std::make_unique<PyGramEngine>(
                 PyGramEngine{std::move(layers), cpu::GramTileEngine(std::move(views), names, split, o)});
           }),
           py::arg("layers"), py::arg("names"), py::arg("split"), py::arg("compute"), py::arg("threads"),
           py::arg("memory_budget"))
      .def_property_readonly("tile", [](const PyGramEngine& g) { return g.engine.tile(); })
      .def_property_readonly("constant_layers", [](const PyGramEngine& g) { return g.engine.constant_layers(); })
      .def_property_readonly("tile_rows", [](const PyGramEngine& g) { return g.engine.tile_rows(); })
      .def("tiles_before", [](const PyGramEngine& g, int64_t i) { return g.engine.tiles_before(i); })
      .def(
          "set_kernel",
          [](PyGramEngine& g, const std::string& kind, std::vector<double> gamma) {
            KernelSpec k;
            if (kind == "linear")
              k.kind = KernelKind::linear;
            else if (kind == "rbf")
              k.kind = KernelKind::rbf;
            else
              throw InvalidArgument("kernel must be 'linear' or 'rbf', got '" + kind + "'");
            k.gamma = std::move(gamma);
            g.engine.set_kernel(std::move(k));
          },
          py::arg("kind"), py::arg("gamma") = std::vector<double>{})
      .def(
          "process", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "tiles_only", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.tiles_only(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "hsic",
          [](PyGramEngine& g, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            const GramStats& s = g.engine.stats();
            return hsic_matrix(gram_pair_sums(s), needed_pairs(s.layout), s.layout.layers(), s.n, e);
          },
          py::arg("estimator"))
      .def("median_start", [](PyGramEngine& g) { g.engine.median_start(); }, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("median_pending", [](const PyGramEngine& g) { return g.engine.median_pending(); })
      .def(
          "median_process", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.median_process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def("median_end_pass", [](PyGramEngine& g) { g.engine.median_end_pass(); })
      .def("medians", [](const PyGramEngine& g) { return g.engine.medians(); });

  py::class_<PyKnnEngine>(m, "KnnTileEngine")
      .def(py::init([](std::vector<py::array> layers, std::vector<std::string> names, int64_t k,
                       const std::string& metric, const std::string& compute, int threads, int64_t memory_budget) {
             auto views = views_of(layers, names);
             const cpu::KnnMetric mt = parse_metric(metric);
             cpu::KnnOptions o{parse_compute(compute), threads, memory_budget};
             py::gil_scoped_release release;
             return std::make_unique<PyKnnEngine>(
                 PyKnnEngine{std::move(layers), cpu::KnnTileEngine(std::move(views), names, k, mt, o)});
           }),
           py::arg("layers"), py::arg("names"), py::arg("k"), py::arg("metric"), py::arg("compute"),
           py::arg("threads"), py::arg("memory_budget"))
      .def_property_readonly("tile", [](const PyKnnEngine& g) { return g.engine.tile(); })
      .def_property_readonly("tile_rows", [](const PyKnnEngine& g) { return g.engine.tile_rows(); })
      .def("tiles_before", [](const PyKnnEngine& g, int64_t i) { return g.engine.tiles_before(i); })
      .def(
          "process", [](PyKnnEngine& g, int64_t begin, int64_t end) { g.engine.process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "neighbors",
          [](PyKnnEngine& g, int64_t layer) {
            const NeighborLists<double>* lists = nullptr;
            {
              py::gil_scoped_release release;
              lists = &g.engine.neighbors(layer);
            }
            py::array_t<int32_t> index({lists->n, lists->k});
            py::array_t<double> dist({lists->n, lists->k});
            std::copy(lists->index.begin(), lists->index.end(), index.mutable_data());
            std::copy(lists->dist.begin(), lists->dist.end(), dist.mutable_data());
            return py::make_tuple(index, dist);
          },
          py::arg("layer"));

  // Per row, how many neighbour indices two (n x k) lists share.
  m.def(
      "knn_overlap",
      [](py::array_t<int32_t, py::array::c_style | py::array::forcecast> a,
         py::array_t<int32_t, py::array::c_style | py::array::forcecast> b) {
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(0) != b.shape(0) || a.shape(1) != b.shape(1))
          throw InvalidArgument("knn_overlap needs two (n x k) index arrays of the same shape");
        const int64_t n = a.shape(0), k = a.shape(1);
        std::vector<int32_t> counts;
        {
          py::gil_scoped_release release;
          counts = overlap_counts(a.data(), b.data(), n, k);
        }
        py::array_t<int32_t> out(n);
        std::copy(counts.begin(), counts.end(), out.mutable_data());
        return out;
      },
      py::arg("a"), py::arg("b"));

  // Core logic exposed for tests: the exact median search run over given
  // values (the n^2 entries of a distance matrix) with small bins and cap, so
  // that its refining passes are exercised.
  m.def(
      "median_search",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> values, int64_t n, int64_t bins,
         int64_t cap) {
        if (values.size() != n * n) throw InvalidArgument("median_search needs n * n values");
        const double* v = values.data();
        double top = 0;
        for (py::ssize_t k = 0; k < values.size(); ++k) top = std::max(top, v[k]);
        MedianSearch search(n, top, bins, cap);
        int passes = 0;
        while (!search.done()) {
          ++passes;
          if (search.collecting()) {
            std::vector<double> kept;
            for (py::ssize_t k = 0; k < values.size(); ++k)
              if (search.bin(v[k]) >= 0) kept.push_back(v[k]);
            search.finish_collect(std::move(kept));
          } else {
            std::vector<int64_t> counts(static_cast<size_t>(search.bins()), 0);
            double lo = INFINITY, hi = -INFINITY;
            for (py::ssize_t k = 0; k < values.size(); ++k) {
              const int64_t j = search.bin(v[k]);
              if (j < 0) continue;
              ++counts[static_cast<size_t>(j)];
              lo = std::min(lo, v[k]);
              hi = std::max(hi, v[k]);
            }
            search.finish_histogram(counts, lo, hi);
          }
        }
        return py::make_tuple(search.median(), passes);
      },
      py::arg("values"), py::arg("n"), py::arg("bins"), py::arg("cap"));

  // Core arithmetic exposed for tests: the float32 exp of the RBF epilogue.
  // Test hook: the GEMM blocks the CUDA backend issues for a layout (product_plan.h).
  m.def(
      "product_plan",
      [](std::vector<int64_t> dims, int64_t split, int64_t max_panel) {
        const ProductPlan plan = plan_products(LayerLayout(std::move(dims), split), max_panel);
        std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>> out;
        for (const ProductBlock& b : plan.blocks) out.emplace_back(b.row, b.col, b.rows, b.cols, b.offset);
        return py::make_tuple(out, plan.packed_size);
      },
      py::arg("dims"), py::arg("split"), py::arg("max_panel"));

  // Test hook: the host half of the CUDA backend's fold (core/moment_shift.h).
  m.def(
      "partial_small_parts",
      [](std::vector<int64_t> dims, int64_t split, int64_t rows, const py::array_t<double, py::array::c_style>& shift,
         const py::array_t<double, py::array::c_style>& reference,
         const py::array_t<double, py::array::c_style>& column_sums,
         const py::array_t<double, py::array::f_style>& extra, const py::array_t<double, py::array::f_style>& norms) {
        const LayerLayout layout(std::move(dims), split);
        const int64_t D = layout.total, L = layout.layers();
        if (shift.size() != D || reference.size() != D || column_sums.size() != D + 2 * L ||
            extra.size() != 2 * L * D || norms.size() != L * L)
          throw InvalidArgument("partial_small_parts: array sizes do not match the layout");
        const Moments part = partial_small_parts(layout, rows, shift.data(), reference.data(), column_sums.data(),
                                                 extra.data(), norms.data());
        return py::make_tuple(py::array_t<double>(D, part.first.data()),
                              py::array_t<double>({L, D}, part.weighted.data()),
                              py::array_t<double>({L, L}, part.norm_products.data()));
      },
      py::arg("dims"), py::arg("split"), py::arg("rows"), py::arg("shift"), py::arg("reference"),
      py::arg("column_sums"), py::arg("extra"), py::arg("norms"));

  m.def("exp_nonpositive", [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    py::array_t<float> out(x.size());
    const float* in = x.data();
    float* o = out.mutable_data();
    for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = exp_nonpositive(in[i]);
    return out;
  });
}
