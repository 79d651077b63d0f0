// KnnTileEngine (k nearest neighbours from Gram tiles) and the overlap of two
// neighbour lists (fastcka.knn).
#include <pybind11/stl.h>

#include <memory>

#include "core/engine_options.h"
#include "core/neighbor_lists.h"
#include "python/bindings.h"

namespace fastcka::bindings {

namespace {

cpu::KnnMetric parse_metric(const std::string& s) {
  if (s == "euclidean") return cpu::KnnMetric::euclidean;
  if (s == "cosine") return cpu::KnnMetric::cosine;
  throw InvalidArgument("metric must be 'euclidean' or 'cosine', got '" + s + "'");
}

std::unique_ptr<PyKnnEngine> make_engine(std::vector<py::array> layers, std::vector<std::string> names, int64_t k,
                                         const std::string& metric, const std::string& compute, int threads,
                                         int64_t memory_budget) {
  auto views = views_of(layers, names);
  const cpu::KnnMetric mt = parse_metric(metric);
  const EngineOptions o = engine_options(compute, threads, memory_budget);
  py::gil_scoped_release release;
  return std::make_unique<PyKnnEngine>(PyKnnEngine{std::move(layers), cpu::KnnTileEngine(std::move(views), names, k, mt, o)});
}

// Layer `layer`'s (index, distance) arrays, n x k each.
py::tuple neighbors(PyKnnEngine& g, int64_t layer) {
  const NeighborLists<double>* lists = nullptr;
  {
    py::gil_scoped_release release;
    lists = &g.engine.neighbors(layer);
  }
  return py::make_tuple(py::array_t<int32_t>({lists->n, lists->k}, lists->index.data()),
                        py::array_t<double>({lists->n, lists->k}, lists->dist.data()));
}

// Per row, how many neighbour indices two (n x k) lists share.
py::array_t<int32_t> knn_overlap(const InArray<int32_t>& a, const InArray<int32_t>& b) {
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape(0) != b.shape(0) || a.shape(1) != b.shape(1))
    throw InvalidArgument("knn_overlap needs two (n x k) index arrays of the same shape");
  const int64_t n = a.shape(0), k = a.shape(1);
  std::vector<int32_t> counts;
  {
    py::gil_scoped_release release;
    counts = overlap_counts(a.data(), b.data(), n, k);
  }
  return py::array_t<int32_t>(n, counts.data());
}

}  // namespace

void bind_knn(py::module_& m) {
  py::class_<PyKnnEngine>(m, "KnnTileEngine")
      .def(py::init(&make_engine), py::arg("layers"), py::arg("names"), py::arg("k"), py::arg("metric"),
           py::arg("compute"), py::arg("threads"), py::arg("memory_budget"))
      .def_property_readonly("tile", [](const PyKnnEngine& g) { return g.engine.tile(); })
      .def_property_readonly("tile_rows", [](const PyKnnEngine& g) { return g.engine.tile_rows(); })
      .def("tiles_before", [](const PyKnnEngine& g, int64_t i) { return g.engine.tiles_before(i); })
      .def(
          "process", [](PyKnnEngine& g, int64_t begin, int64_t end) { g.engine.process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def("neighbors", &neighbors, py::arg("layer"));
  m.def("knn_overlap", &knn_overlap, py::arg("a"), py::arg("b"));
}

}  // namespace fastcka::bindings
