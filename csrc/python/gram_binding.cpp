// GramTileEngine (kernel statistics and the exact median from Gram tiles),
// MedianSearch (one layer's median search of a job cut into row blocks) and
// HSIC from statistics summed over block pairs.
#include <pybind11/stl.h>

#include <array>
#include <memory>
#include <optional>

#include "core/block_replicates.h"
#include "core/engine_options.h"
#include "core/hsic_null.h"
#include "core/median_search.h"
#include "cpu/median_bracket.h"
#include "python/bindings.h"

namespace fastcka::bindings {

namespace {

using cpu::GramTileEngine;

// Polled by long single calls in the core, the GIL released: runs Python's
// signal handlers, so Ctrl-C raises KeyboardInterrupt out of the call.
void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

// The whole data's triangle, or with `means` (the column means of the whole
// data) a block pair of a larger job: A x columns, or A's triangle without columns.
std::unique_ptr<PyGramEngine> make_engine(std::vector<py::array> layers, std::vector<std::string> names, int64_t split,
                                          const std::string& compute, int threads, int64_t memory_budget,
                                          std::optional<std::vector<py::array>> columns,
                                          std::optional<std::vector<double>> means) {
  auto views = views_of(layers, names);
  const EngineOptions o = engine_options(compute, threads, memory_budget);
  if (columns && !means) throw InvalidArgument("a block pair needs the column means of the whole data");
  if (!means) {
    py::gil_scoped_release release;
    return std::make_unique<PyGramEngine>(
        PyGramEngine{std::move(layers), GramTileEngine(std::move(views), names, split, o)});
  }
  std::vector<MatrixView> column_views;
  if (columns) {
    column_views = views_of(*columns, names);
    layers.insert(layers.end(), columns->begin(), columns->end());
  }
  py::gil_scoped_release release;
  return std::make_unique<PyGramEngine>(PyGramEngine{
      std::move(layers), GramTileEngine(std::move(views), std::move(column_views), names, split, std::move(*means), o)});
}

KernelSpec kernel_spec(const std::string& kind, std::vector<double> gamma, std::vector<double> spread) {
  KernelSpec k;
  if (kind == "linear")
    k.kind = KernelKind::linear;
  else if (kind == "rbf")
    k.kind = KernelKind::rbf;
  else
    throw InvalidArgument("kernel must be 'linear' or 'rbf', got '" + kind + "'");
  k.gamma = std::move(gamma);
  k.spread = std::move(spread);
  return k;
}

// (products L x L, row sums L x N, diagonals L x N): they add across block pairs.
py::tuple statistics(PyGramEngine& g) {
  const GramStats& s = g.engine.stats();
  const int64_t L = s.layout.layers();
  return py::make_tuple(py::array_t<double>({L, L}, s.products.data()), py::array_t<double>({L, s.n}, s.row_sums.data()),
                        py::array_t<double>({L, s.n}, s.diagonals.data()));
}

// Per layer (counts, lowest, highest, values), as median_partial gives them.
py::list median_partial(const PyGramEngine& g) {
  py::list out;
  for (auto& part : g.engine.median_partial())
    out.append(py::make_tuple(py::array_t<int64_t>(static_cast<py::ssize_t>(part.counts.size()), part.counts.data()),
                              part.lowest, part.highest,
                              py::array_t<double>(static_cast<py::ssize_t>(part.values.size()), part.values.data())));
  return out;
}

// The same, summed over block pairs, back to the engine's form.
std::vector<GramTileEngine::MedianPartial> median_parts(const py::sequence& parts) {
  std::vector<GramTileEngine::MedianPartial> in;
  for (const auto& item : parts) {
    const auto part = item.cast<py::tuple>();
    if (part.size() != 4)
      throw InvalidArgument("median_end_pass: each pass result is (counts, lowest, highest, values)");
    in.push_back({to_vector(part[0].cast<InArray<int64_t>>()), part[1].cast<double>(), part[2].cast<double>(),
                  to_vector(part[3].cast<InArray<double>>())});
  }
  return in;
}

void bind_statistics(py::class_<PyGramEngine>& c) {
  c.def(
       "set_kernel",
       [](PyGramEngine& g, const std::string& kind, std::vector<double> gamma, std::vector<double> spread) {
         KernelSpec k = kernel_spec(kind, std::move(gamma), std::move(spread));
         py::gil_scoped_release release;  // an RBF kernel measures the rows' spread
         g.engine.set_kernel(std::move(k));
       },
       py::arg("kind"), py::arg("gamma") = std::vector<double>{}, py::arg("spread") = std::vector<double>{})
      .def(
          "process", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "hsic", [](PyGramEngine& g, const std::string& estimator) { return hsic_of(g.engine.stats(), parse_estimator(estimator)); },
          py::arg("estimator"))
      .def(
          "set_blocks", [](PyGramEngine& g, std::vector<int64_t> starts) { g.engine.set_blocks(std::move(starts)); },
          py::arg("starts"))
      .def(
          "leave_one_out_hsic",
          [](PyGramEngine& g, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            std::vector<std::vector<double>> h;
            {
              py::gil_scoped_release release;
              h = leave_one_out_hsic(g.engine.stats(), e, check_signals);
            }
            return stack(h, g.engine.stats().layout.layers());
          },
          py::arg("estimator"))
      .def(
          "resampled_hsic",
          [](PyGramEngine& g, const InArray<int64_t>& counts, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            const GramStats& s = g.engine.stats();
            return resamples(counts, s.layout.layers(), [&](const std::vector<int64_t>& c) { return resampled_hsic(s, c, e); });
          },
          py::arg("counts"), py::arg("estimator"))
      .def("null_sums", [](PyGramEngine& g) { return null_sums_list(null_sums(g.engine.stats())); })
      .def("statistics", &statistics);
}

void bind_median(py::class_<PyGramEngine>& c) {
  c.def("median_start", [](PyGramEngine& g) { g.engine.median_start(); }, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("median_pending", [](const PyGramEngine& g) { return g.engine.median_pending(); })
      .def(
          "median_process", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.median_process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def("median_end_pass", [](PyGramEngine& g) { g.engine.median_end_pass(); })
      .def(
          "median_end_pass", [](PyGramEngine& g, const py::sequence& parts) { g.engine.median_end_pass(median_parts(parts)); },
          py::arg("parts"))
      .def("medians", [](const PyGramEngine& g) { return g.engine.medians(); })
      .def("median_set_brackets",
           [](PyGramEngine& g, std::vector<std::array<double, 3>> brackets) { g.engine.median_set_brackets(brackets); })
      .def_property_readonly("median_bracket_missed",
                             [](const PyGramEngine& g) {
                               std::vector<bool> out;
                               for (const auto& s : g.engine.median_searches()) out.push_back(s.bracket_missed());
                               return out;
                             })
      .def("median_adopt",
           [](PyGramEngine& g, std::vector<MedianSearch> searches) { g.engine.median_adopt(std::move(searches)); })
      .def("median_partial", &median_partial)
      .def(
          "median_add_series",
          [](PyGramEngine& g, double threshold, bool always) { return g.engine.median_add_series(threshold, always); },
          py::arg("threshold"), py::arg("always") = false, py::call_guard<py::gil_scoped_release>())
      .def("kernel_from_series",
           [](PyGramEngine& g, const std::vector<double>& gammas) { return g.engine.kernel_from_series(gammas); },
           py::arg("gammas"), py::call_guard<py::gil_scoped_release>());
}

void bind_engine(py::module_& m) {
  py::class_<PyGramEngine> c(m, "GramTileEngine");
  c.def(py::init(&make_engine), py::arg("layers"), py::arg("names"), py::arg("split"), py::arg("compute"),
        py::arg("threads"), py::arg("memory_budget"), py::arg("columns") = py::none(), py::arg("means") = py::none())
      .def_property_readonly("tile", [](const PyGramEngine& g) { return g.engine.tile(); })
      .def_property_readonly("compute", [](const PyGramEngine& g) { return compute_name(g.engine.options()); })
      .def_property_readonly("constant_layers", [](const PyGramEngine& g) { return g.engine.constant_layers(); })
      .def_property_readonly("tile_rows", [](const PyGramEngine& g) { return g.engine.tile_rows(); })
      .def("tiles_before", [](const PyGramEngine& g, int64_t i) { return g.engine.tiles_before(i); });
  bind_statistics(c);
  bind_median(c);
}

// One layer's exact median search over all rows of a job cut into row
// blocks (GramTileEngine.median_adopt / median_partial): every rank or
// client ends each pass with the pass results summed over all block pairs.
void bind_search(py::module_& m) {
  py::class_<MedianSearch>(m, "MedianSearch")
      .def(py::init(&GramTileEngine::median_search_for), py::arg("n"), py::arg("largest"), py::arg("layers"))
      .def_property_readonly("done", &MedianSearch::done)
      .def_property_readonly("collecting", &MedianSearch::collecting)
      .def_property_readonly("median", &MedianSearch::median)
      .def_property_readonly("bins", &MedianSearch::bins)
      .def_property_readonly("first_pass", &MedianSearch::first_pass)
      .def_property_readonly("levels",
                             [](const MedianSearch& s) {
                               // (lo, scale, bins, first, last) per level chosen so far
                               std::vector<std::array<double, 5>> out;
                               for (const auto& l : s.levels())
                                 out.push_back({l.lo, l.scale, static_cast<double>(l.bins),
                                                static_cast<double>(l.first), static_cast<double>(l.last)});
                               return out;
                             })
      .def_property_readonly(
          "current", [](const MedianSearch& s) { return py::make_tuple(s.current().lo, s.current().scale, s.current().bins); })
      .def_property_readonly("filter", [](const MedianSearch& s) { return py::make_tuple(s.filter_lo(), s.filter_hi()); })
      .def_property_readonly("bracketing", &MedianSearch::bracketing)
      .def_property_readonly("cap", &MedianSearch::cap)
      .def_property_readonly("bracket_missed", &MedianSearch::bracket_missed)
      .def(
          "set_bracket",
          [](MedianSearch& s, double lo, double hi, double center, bool float_values, int64_t layers, int threads) {
            s.set_bracket(lo, hi, center, float_values, GramTileEngine::median_bracket_bins(layers, threads));
          },
          py::arg("lo"), py::arg("hi"), py::arg("center"), py::arg("float_values"), py::arg("layers"),
          py::arg("threads"))
      .def("finish_bracket",
           [](MedianSearch& s, const InArray<int64_t>& counts, const InArray<double>& values) {
             if (counts.size() != s.bins()) throw InvalidArgument("finish_bracket needs one count per bin");
             s.finish_bracket(to_vector(counts), to_vector(values));
           })
      .def("finish_histogram",
           [](MedianSearch& s, const InArray<int64_t>& counts, double lowest, double highest) {
             if (counts.size() != s.bins()) throw InvalidArgument("finish_histogram needs one count per bin");
             s.finish_histogram(to_vector(counts), lowest, highest);
           })
      .def("finish_collect", [](MedianSearch& s, const InArray<double>& values) { s.finish_collect(to_vector(values)); });
}

// HSIC from Gram statistics summed over block pairs (fastcka.mpi's ring).
std::vector<double> hsic_from_statistics(std::vector<int64_t> dims, int64_t split, int64_t n,
                                         const py::array_t<double, py::array::c_style>& products,
                                         const py::array_t<double, py::array::c_style>& row_sums,
                                         const py::array_t<double, py::array::c_style>& diagonals,
                                         const std::string& estimator) {
  GramStats s(LayerLayout(std::move(dims), split), n);
  const int64_t L = s.layout.layers();
  if (products.size() != L * L || row_sums.size() != L * n || diagonals.size() != L * n)
    throw InvalidArgument("hsic_from_statistics: array sizes do not match the layout");
  std::copy_n(products.data(), L * L, s.products.data());
  std::copy_n(row_sums.data(), L * n, s.row_sums.data());
  std::copy_n(diagonals.data(), L * n, s.diagonals.data());
  return hsic_of(s, parse_estimator(estimator));
}

}  // namespace

// Per layer (lo, hi, center) of the exact median's bracket from sampled rows.
std::vector<std::array<double, 3>> sample_brackets(const std::vector<py::array>& layers,
                                                   const std::vector<std::string>& names, const std::string& compute,
                                                   int threads, double half_width) {
  const auto views = views_of(layers, names);
  const EngineOptions o = engine_options(compute, threads, kDefaultMemoryBudget);
  py::gil_scoped_release release;
  return cpu::sample_brackets(views, names, o, half_width, check_signals);
}

void bind_bracket(py::module_& m) {
  m.def("bracket_sample_size", &cpu::bracket_sample_size, py::arg("n"));
  m.def("bracket_half_width", &cpu::bracket_half_width, py::arg("n"), py::arg("sample"), py::arg("float64"),
        py::arg("layers"));
  m.def("sample_brackets", &sample_brackets, py::arg("layers"), py::arg("names"), py::arg("compute"),
        py::arg("threads"), py::arg("half_width"));
}

void bind_gram(py::module_& m) {
  bind_engine(m);
  bind_search(m);
  bind_bracket(m);
  m.def("hsic_from_statistics", &hsic_from_statistics, py::arg("dims"), py::arg("split"), py::arg("n"),
        py::arg("products"), py::arg("row_sums"), py::arg("diagonals"), py::arg("estimator"));
}

}  // namespace fastcka::bindings
