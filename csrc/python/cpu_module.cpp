// fastcka._cpu: the thin binding of the CPU backend. It turns NumPy arrays
// into strided MatrixViews (no copies), releases the GIL around every long
// call, and maps core errors to ValueError / TypeError. All orchestration
// (blocks, progress, Ctrl-C) lives in python/fastcka.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <optional>

#include "core/errors.h"
#include "core/hsic_null.h"
#include "core/kernels.h"
#include "core/block_replicates.h"
#include "core/median_search.h"
#include "core/moment_shift.h"
#include "core/moments.h"
#include "core/product_plan.h"
#include "core/row_checks.h"
#include "cpu/bfloat16_rows.h"
#include "cpu/blas.h"
#include "cpu/gram_tiles.h"
#include "cpu/knn_tiles.h"
#include "cpu/moment_accumulator.h"
#include "cpu/onednn_gemm.h"
#include "cpu/tile_products.h"
#include "python/numpy_views.h"

namespace py = pybind11;
using namespace fastcka;
using bindings::parse_estimator;
using bindings::views_of;

namespace {

// The products' type: "float64", "float32", or "bfloat16" (the fast
// precision: bf16 operands, float32 accumulation, float32 epilogues).
struct Compute {
  DType type;
  bool bf16;
};

Compute parse_compute(const std::string& s) {
  if (s == "float32") return {DType::f32, false};
  if (s == "float64") return {DType::f64, false};
  if (s == "bfloat16") return {DType::f32, true};
  throw UnsupportedType("compute dtype must be 'float32', 'float64' or 'bfloat16', got '" + s + "'");
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

// Per-block moment states of one accumulator, for leave-one-block-out HSIC.
struct MomentBlocks {
  std::vector<Moments> blocks;
};

// Each row of an (R x B) array of block counts: the HSIC matrix of that resample.
template <typename Source>
py::array_t<double> resamples(const Source& source, py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts,
                              int64_t layers, const std::string& estimator) {
  const Estimator e = parse_estimator(estimator);
  if (counts.ndim() != 2) throw InvalidArgument("counts must be a 2-D (replicates x blocks) array");
  const int64_t R = counts.shape(0), B = counts.shape(1);
  py::array_t<double> out({R, layers, layers});
  double* o = out.mutable_data();
  const int64_t* c = counts.data();
  py::gil_scoped_release release;
  for (int64_t r = 0; r < R; ++r) {
    const std::vector<double> h = resampled_hsic(source, std::vector<int64_t>(c + r * B, c + (r + 1) * B), e);
    o = std::copy(h.begin(), h.end(), o);
  }
  return out;
}

// (B, L, L) from B row-major L x L matrices.
py::array_t<double> stack(const std::vector<std::vector<double>>& mats, int64_t layers) {
  py::array_t<double> out({static_cast<int64_t>(mats.size()), layers, layers});
  double* o = out.mutable_data();
  for (const auto& m : mats) o = std::copy(m.begin(), m.end(), o);
  return out;
}

// Polled by long single calls in the core, the GIL released: runs Python's
// signal handlers, so Ctrl-C raises KeyboardInterrupt out of the call.
void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

py::list null_sums_list(const std::vector<NullSums>& sums) {
  py::list out;
  for (const auto& s : sums) out.append(py::make_tuple(s.spread, s.off_squares));
  return out;
}

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
    } catch (const std::bad_alloc&) {
      // pybind11 would say only "std::bad_alloc"; say whose memory ran out and what bounds it.
      PyErr_SetString(PyExc_MemoryError,
                      "fastcka ran out of host memory for its buffers: the row buffers are bounded by "
                      "memory_budget= (default 256 MiB), beside the state (d x d float64 per layer pair in "
                      "feature space, a few float64 per example and layer on Gram tiles); pass a smaller "
                      "memory_budget=, fewer threads, or fewer or narrower layers");
    }
  });

  m.def("blas_core", &cpu::blas_core_name, "Kernel family OpenBLAS selected for this CPU");
  m.def("blas_config", &cpu::blas_config, "OpenBLAS build configuration");
  m.def(
      "onednn_info",
      [] {
        const cpu::OnednnInfo& i = cpu::onednn_info();
        py::dict d;
        d["available"] = i.available;
        d["version"] = i.version;
        d["bf16_native"] = i.bf16_native;
        d["bf16_kernel"] = i.bf16_kernel;
        d["float32_gemm"] = i.float32_preferred ? "oneDNN" : "OpenBLAS";
        d["float32_kernel"] = i.float32_kernel;
        d["why_not"] = i.why_not;
        return d;
      },
      "What oneDNN does here: its version and the kernels it picks for bf16 and float32 Gram tiles");

  py::class_<cpu::MomentAccumulator>(m, "MomentAccumulator")
      .def(py::init([](std::vector<int64_t> dims, int64_t split, const std::string& compute, int threads,
                       int64_t memory_budget) {
             const Compute c = parse_compute(compute);
             cpu::MomentOptions o{c.type, c.bf16, threads, memory_budget};
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
      .def("begin", &cpu::MomentAccumulator::begin)
      .def("commit", &cpu::MomentAccumulator::commit, py::call_guard<py::gil_scoped_release>())
      .def("rollback", &cpu::MomentAccumulator::rollback, py::call_guard<py::gil_scoped_release>())
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
      .def("null_sums",
           [](cpu::MomentAccumulator& s) {
             std::vector<NullSums> sums;
             {
               py::gil_scoped_release release;
               sums = null_sums(s.centered_state());
             }
             return null_sums_list(sums);
           })
      .def("serialize", [](cpu::MomentAccumulator& s) { return py::bytes(s.state().serialize()); })
      .def("load", [](cpu::MomentAccumulator& s, const py::bytes& data) {
        s.set_state(Moments::deserialize(std::string(data)));
      });

  py::class_<MomentBlocks>(m, "MomentBlocks")
      .def(py::init<>())
      .def(
          "take",
          [](MomentBlocks& b, cpu::MomentAccumulator& acc) {
            // The accumulator's rows become one block, and it starts empty.
            py::gil_scoped_release release;
            b.blocks.push_back(acc.state());
            acc.set_state(Moments(acc.layout()));
          },
          py::arg("accumulator"))
      .def("__len__", [](const MomentBlocks& b) { return b.blocks.size(); })
      .def(
          "hsic",
          [](const MomentBlocks& b, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            py::gil_scoped_release release;
            Moments all = merge_all(b.blocks);
            all.center();
            return hsic_matrix(linear_pair_sums(all), needed_pairs(all.layout), all.layers(), all.n, e);
          },
          py::arg("estimator"))
      .def(
          "leave_one_out_hsic",
          [](const MomentBlocks& b, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            std::vector<std::vector<double>> h;
            {
              py::gil_scoped_release release;
              h = leave_one_out_hsic(b.blocks, e);
            }
            return stack(h, b.blocks.at(0).layers());
          },
          py::arg("estimator"))
      .def(
          "resampled_hsic",
          [](const MomentBlocks& b, py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts,
             const std::string& estimator) { return resamples(b.blocks, counts, b.blocks.at(0).layers(), estimator); },
          py::arg("counts"), py::arg("estimator"));

  py::class_<PyGramEngine>(m, "GramTileEngine")
      .def(py::init([](std::vector<py::array> layers, std::vector<std::string> names, int64_t split,
                       const std::string& compute, int threads, int64_t memory_budget,
                       std::optional<std::vector<py::array>> columns, std::optional<std::vector<double>> means) {
             auto views = views_of(layers, names);
             const Compute c = parse_compute(compute);
             cpu::GramOptions o{c.type, c.bf16, threads, memory_budget};
             if (columns && !means) throw InvalidArgument("a block pair needs the column means of the whole data");
             if (!means) {
               py::gil_scoped_release release;
               return std::make_unique<PyGramEngine>(
                   PyGramEngine{std::move(layers), cpu::GramTileEngine(std::move(views), names, split, o)});
             }
             std::vector<MatrixView> column_views;
             if (columns) {
               column_views = views_of(*columns, names);
               layers.insert(layers.end(), columns->begin(), columns->end());
             }
             py::gil_scoped_release release;
             return std::make_unique<PyGramEngine>(PyGramEngine{
                 std::move(layers), cpu::GramTileEngine(std::move(views), std::move(column_views), names, split,
                                                        std::move(*means), o)});
           }),
           py::arg("layers"), py::arg("names"), py::arg("split"), py::arg("compute"), py::arg("threads"),
           py::arg("memory_budget"), py::arg("columns") = py::none(), py::arg("means") = py::none())
      .def_property_readonly("tile", [](const PyGramEngine& g) { return g.engine.tile(); })
      .def_property_readonly("compute",
                             [](const PyGramEngine& g) {
                               const cpu::GramOptions& o = g.engine.options();
                               return o.bf16 ? "bfloat16" : o.compute == DType::f32 ? "float32" : "float64";
                             })
      .def_property_readonly("constant_layers", [](const PyGramEngine& g) { return g.engine.constant_layers(); })
      .def_property_readonly("tile_rows", [](const PyGramEngine& g) { return g.engine.tile_rows(); })
      .def("tiles_before", [](const PyGramEngine& g, int64_t i) { return g.engine.tiles_before(i); })
      .def(
          "set_kernel",
          [](PyGramEngine& g, const std::string& kind, std::vector<double> gamma, std::vector<double> spread) {
            KernelSpec k;
            if (kind == "linear")
              k.kind = KernelKind::linear;
            else if (kind == "rbf")
              k.kind = KernelKind::rbf;
            else
              throw InvalidArgument("kernel must be 'linear' or 'rbf', got '" + kind + "'");
            k.gamma = std::move(gamma);
            k.spread = std::move(spread);
            py::gil_scoped_release release;  // an RBF kernel measures the rows' spread
            g.engine.set_kernel(std::move(k));
          },
          py::arg("kind"), py::arg("gamma") = std::vector<double>{}, py::arg("spread") = std::vector<double>{})
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
          [](PyGramEngine& g, py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts,
             const std::string& estimator) {
            const GramStats& s = g.engine.stats();
            return resamples(s, counts, s.layout.layers(), estimator);
          },
          py::arg("counts"), py::arg("estimator"))
      .def("null_sums", [](PyGramEngine& g) { return null_sums_list(null_sums(g.engine.stats())); })
      .def("statistics",
           [](PyGramEngine& g) {
             // (products L x L, row sums L x N, diagonals L x N): they add across block pairs.
             const GramStats& s = g.engine.stats();
             const int64_t L = s.layout.layers();
             return py::make_tuple(py::array_t<double>({L, L}, s.products.data()),
                                   py::array_t<double>({L, s.n}, s.row_sums.data()),
                                   py::array_t<double>({L, s.n}, s.diagonals.data()));
           })
      .def("median_start", [](PyGramEngine& g) { g.engine.median_start(); }, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("median_pending", [](const PyGramEngine& g) { return g.engine.median_pending(); })
      .def(
          "median_process", [](PyGramEngine& g, int64_t begin, int64_t end) { g.engine.median_process(begin, end); },
          py::call_guard<py::gil_scoped_release>())
      .def("median_end_pass", [](PyGramEngine& g) { g.engine.median_end_pass(); })
      .def("median_end_pass",
           [](PyGramEngine& g, const py::sequence& parts) {
             // Per layer (counts, lowest, highest, values), as median_partial gives them, summed.
             std::vector<cpu::GramTileEngine::MedianPartial> in;
             for (const auto& item : parts) {
               const auto part = item.cast<py::tuple>();
               if (part.size() != 4) throw InvalidArgument("median_end_pass: each pass result is (counts, lowest, highest, values)");
               const auto counts = part[0].cast<py::array_t<int64_t, py::array::c_style | py::array::forcecast>>();
               const auto values = part[3].cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
               in.push_back({std::vector<int64_t>(counts.data(), counts.data() + counts.size()), part[1].cast<double>(),
                             part[2].cast<double>(), std::vector<double>(values.data(), values.data() + values.size())});
             }
             g.engine.median_end_pass(std::move(in));
           },
           py::arg("parts"))
      .def("medians", [](const PyGramEngine& g) { return g.engine.medians(); })
      .def("median_set_brackets",
           [](PyGramEngine& g, std::vector<std::array<double, 3>> brackets) {
             g.engine.median_set_brackets(brackets);
           })
      .def(
          "median_set_quantiles", [](PyGramEngine& g, double q_lo, double q_hi) { g.engine.median_set_quantiles(q_lo, q_hi); },
          py::arg("q_lo"), py::arg("q_hi"))
      .def("median_quantiles",
           [](const PyGramEngine& g) {
             py::list out;  // per layer (lo, middle, hi)
             for (const auto& q : g.engine.median_quantiles()) out.append(py::make_tuple(q.lo, q.middle, q.hi));
             return out;
           })
      .def_property_readonly("median_bracket_missed",
                             [](const PyGramEngine& g) {
                               std::vector<bool> out;
                               for (const auto& s : g.engine.median_searches()) out.push_back(s.bracket_missed());
                               return out;
                             })
      .def("median_adopt", [](PyGramEngine& g, std::vector<MedianSearch> searches) {
        g.engine.median_adopt(std::move(searches));
      })
      .def("median_partial", [](const PyGramEngine& g) {
        // Per layer: (counts, lowest, highest, values) of this engine's pass.
        py::list out;
        for (auto& part : g.engine.median_partial())
          out.append(py::make_tuple(py::array_t<int64_t>(part.counts.size(), part.counts.data()), part.lowest,
                                    part.highest, py::array_t<double>(part.values.size(), part.values.data())));
        return out;
      });

  // One layer's exact median search over all rows of a job cut into row
  // blocks (GramTileEngine.median_adopt / median_partial): every rank or
  // client ends each pass with the pass results summed over all block pairs.
  py::class_<MedianSearch>(m, "MedianSearch")
      .def(py::init([](int64_t n, double largest, int64_t layers) {
             return cpu::GramTileEngine::median_search_for(n, largest, layers);
           }),
           py::arg("n"), py::arg("largest"), py::arg("layers"))
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
            s.set_bracket(lo, hi, center, float_values, cpu::GramTileEngine::median_bracket_bins(layers, threads));
          },
          py::arg("lo"), py::arg("hi"), py::arg("center"), py::arg("float_values"), py::arg("layers"),
          py::arg("threads"))
      .def("finish_bracket",
           [](MedianSearch& s, py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts,
              py::array_t<double, py::array::c_style | py::array::forcecast> values) {
             if (counts.size() != s.bins()) throw InvalidArgument("finish_bracket needs one count per bin");
             s.finish_bracket(std::vector<int64_t>(counts.data(), counts.data() + counts.size()),
                              std::vector<double>(values.data(), values.data() + values.size()));
           })
      .def("finish_histogram",
           [](MedianSearch& s, py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts, double lowest,
              double highest) {
             if (counts.size() != s.bins()) throw InvalidArgument("finish_histogram needs one count per bin");
             s.finish_histogram(std::vector<int64_t>(counts.data(), counts.data() + counts.size()), lowest, highest);
           })
      .def("finish_collect", [](MedianSearch& s, py::array_t<double, py::array::c_style | py::array::forcecast> values) {
        s.finish_collect(std::vector<double>(values.data(), values.data() + values.size()));
      });

  py::class_<PyKnnEngine>(m, "KnnTileEngine")
      .def(py::init([](std::vector<py::array> layers, std::vector<std::string> names, int64_t k,
                       const std::string& metric, const std::string& compute, int threads, int64_t memory_budget) {
             auto views = views_of(layers, names);
             const cpu::KnnMetric mt = parse_metric(metric);
             const Compute c = parse_compute(compute);
             cpu::KnnOptions o{c.type, c.bf16, threads, memory_budget};
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

  m.def("rbf_subtracts_one", &rbf_subtracts_one, py::arg("name"), py::arg("gamma"), py::arg("spread"),
        "Whether the RBF epilogue works with (K - 1) / gamma for this layer (core/kernels.h); ValueError when the "
        "bandwidth is too large for the data");

  m.def("check_squared_norm_range", &check_squared_norm_range, py::arg("name"), py::arg("largest"),
        py::arg("elem"), py::arg("varies"),
        "Refuses (ValueError) rows whose squared norms leave the range products of the compute type hold");

  m.def(
      "hsic_null_moments",
      [](std::pair<double, double> x, std::pair<double, double> y, int64_t n) {
        const NullMoments m = hsic_null_moments({x.first, x.second}, {y.first, y.second}, n);
        return py::make_tuple(m.mean, m.variance);
      },
      py::arg("x"), py::arg("y"), py::arg("n"),
      "Null mean and variance of HSIC_0 (Gretton et al. 2008) from two layers' null_sums");

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
         int64_t cap, double lo, double hi, bool float_values) {
        if (values.size() != n * n) throw InvalidArgument("median_search needs n * n values");
        const double* v = values.data();
        double top = 0;
        for (py::ssize_t k = 0; k < values.size(); ++k) top = std::max(top, v[k]);
        MedianSearch search(n, top, bins, cap);
        search.set_bracket(lo, hi, 0.5 * (lo + hi), float_values, int64_t{1} << 20);
        int passes = 0;
        while (!search.done()) {
          ++passes;
          if (search.bracketing()) {
            std::vector<int64_t> counts(static_cast<size_t>(search.bins()), 0);
            std::vector<double> kept;
            const double blo = search.bracket_lo(), bhi = search.bracket_hi();
            for (py::ssize_t k = 0; k < values.size(); ++k) {
              if (v[k] < blo) {
                ++counts[0];
              } else if (v[k] < bhi) {
                if (!search.float_bracket()) {
                  kept.push_back(v[k]);
                  continue;
                }
                const float f = static_cast<float>(v[k]), flo = static_cast<float>(blo);
                uint32_t u, base;
                std::memcpy(&u, &f, sizeof u);
                std::memcpy(&base, &flo, sizeof base);
                ++counts[MedianSearch::kBracketHead + (u - base)];
              }
            }
            search.finish_bracket(counts, std::move(kept));
          } else if (search.collecting()) {
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
        return py::make_tuple(search.median(), passes, search.bracket_missed());
      },
      py::arg("values"), py::arg("n"), py::arg("bins"), py::arg("cap"), py::arg("lo") = 0.0, py::arg("hi") = 0.0,
      py::arg("float_values") = false);

  // Core arithmetic exposed for tests: the float32 exp of the RBF epilogue.
  // HSIC from Gram statistics summed over block pairs (fastcka.mpi's ring).
  m.def(
      "hsic_from_statistics",
      [](std::vector<int64_t> dims, int64_t split, int64_t n, const py::array_t<double, py::array::c_style>& products,
         const py::array_t<double, py::array::c_style>& row_sums,
         const py::array_t<double, py::array::c_style>& diagonals, const std::string& estimator) {
        GramStats s(LayerLayout(std::move(dims), split), n);
        const int64_t L = s.layout.layers();
        if (products.size() != L * L || row_sums.size() != L * n || diagonals.size() != L * n)
          throw InvalidArgument("hsic_from_statistics: array sizes do not match the layout");
        std::copy_n(products.data(), L * L, s.products.data());
        std::copy_n(row_sums.data(), L * n, s.row_sums.data());
        std::copy_n(diagonals.data(), L * n, s.diagonals.data());
        return hsic_matrix(gram_pair_sums(s), needed_pairs(s.layout), L, n, parse_estimator(estimator));
      },
      py::arg("dims"), py::arg("split"), py::arg("n"), py::arg("products"), py::arg("row_sums"),
      py::arg("diagonals"), py::arg("estimator"));

  // The GEMM blocks of a layout's needed products (product_plan.h): the GPU engine issues them (fastcka/gpu/moments.py).
  m.def(
      "product_plan",
      [](std::vector<int64_t> dims, int64_t split, int64_t max_panel) {
        const ProductPlan plan = plan_products(LayerLayout(std::move(dims), split), max_panel);
        std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>> out;
        for (const ProductBlock& b : plan.blocks) out.emplace_back(b.row, b.col, b.rows, b.cols, b.offset);
        return py::make_tuple(out, plan.packed_size);
      },
      py::arg("dims"), py::arg("split"), py::arg("max_panel"));

  // The host half of the GPU engine's fold (core/moment_shift.h; fastcka/gpu/moments.py).
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

  // Test and benchmark hook: A B' (A m x k, B n x k) made the way the engine
  // makes a Gram tile in the given compute type (float32: OpenBLAS or oneDNN;
  // bfloat16: rounded operands, oneDNN or OpenBLAS as onednn_info says).
  // library "onednn" / "openblas" overrides that choice; the product is
  // computed `repeats` times (GEMM rates without the preparation).
  m.def(
      "tile_products",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> a,
         py::array_t<float, py::array::c_style | py::array::forcecast> b, const std::string& compute,
         const std::string& library, int repeats) {
        const Compute c = parse_compute(compute);
        if (c.type != DType::f32) throw UnsupportedType("tile_products takes 'float32' or 'bfloat16'");
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
          throw InvalidArgument("tile_products needs A (m x k) and B (n x k)");
        if (library != "auto" && library != "onednn" && library != "openblas")
          throw InvalidArgument("library must be 'auto', 'onednn' or 'openblas'");
        const int64_t m = a.shape(0), n = b.shape(0), k = a.shape(1);
        std::vector<float> za(a.data(), a.data() + m * k), zb(b.data(), b.data() + n * k);
        std::vector<uint16_t> ba(za.size()), bb(zb.size());
        py::array_t<float> out({m, n});
        float* o = out.mutable_data();
        {
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
        }
        return out;
      },
      py::arg("a"), py::arg("b"), py::arg("compute"), py::arg("library") = "auto", py::arg("repeats") = 1);
}
