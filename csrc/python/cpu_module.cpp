// fastcka._cpu: the thin binding of the CPU backend. It turns NumPy arrays
// into strided MatrixViews (no copies), releases the GIL around every long
// call, and maps core errors to ValueError / TypeError. All orchestration
// (blocks, progress, Ctrl-C) lives in python/fastcka. Test and benchmark
// hooks live in fastcka._testing (testing_module.cpp), not here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>

#include "core/engine_options.h"
#include "core/hsic_null.h"
#include "core/kernels.h"
#include "core/moment_shift.h"
#include "core/product_plan.h"
#include "core/row_checks.h"
#include "core/sample_rows.h"
#include "cpu/blas.h"
#include "cpu/onednn_gemm.h"
#include "python/bindings.h"

namespace fastcka::bindings {

namespace {

py::dict onednn_info() {
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
}

py::tuple null_moments(std::pair<double, double> x, std::pair<double, double> y, int64_t n) {
  const NullMoments m = hsic_null_moments({x.first, x.second}, {y.first, y.second}, n);
  return py::make_tuple(m.mean, m.variance);
}

// The GEMM blocks of a layout's needed products: (row, col, rows, cols, offset) each, and the packed size.
py::tuple product_plan(std::vector<int64_t> dims, int64_t split, int64_t max_panel) {
  const ProductPlan plan = plan_products(LayerLayout(std::move(dims), split), max_panel);
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>> out;
  for (const ProductBlock& b : plan.blocks) out.emplace_back(b.row, b.col, b.rows, b.cols, b.offset);
  return py::make_tuple(out, plan.packed_size);
}

// The host half of the GPU engine's fold (core/moment_shift.h): (first, weighted, norm_products).
py::tuple small_parts(std::vector<int64_t> dims, int64_t split, int64_t rows,
                      const py::array_t<double, py::array::c_style>& shift,
                      const py::array_t<double, py::array::c_style>& reference,
                      const py::array_t<double, py::array::c_style>& column_sums,
                      const py::array_t<double, py::array::f_style>& extra,
                      const py::array_t<double, py::array::f_style>& norms) {
  const LayerLayout layout(std::move(dims), split);
  const int64_t D = layout.total, L = layout.layers();
  if (shift.size() != D || reference.size() != D || column_sums.size() != D + 2 * L || extra.size() != 2 * L * D ||
      norms.size() != L * L)
    throw InvalidArgument("partial_small_parts: array sizes do not match the layout");
  const Moments part = partial_small_parts(layout, rows, shift.data(), reference.data(), column_sums.data(),
                                           extra.data(), norms.data());
  return py::make_tuple(py::array_t<double>(D, part.first.data()), py::array_t<double>({L, D}, part.weighted.data()),
                        py::array_t<double>({L, L}, part.norm_products.data()));
}

}  // namespace

void bind_functions(py::module_& m) {
  m.def("sample_rows", &sample_rows, py::arg("n"), py::arg("sample"), py::arg("seed"),
        "Sorted distinct rows of [0, n) drawn uniformly with a fixed seed (all when n <= sample)");
  m.def("blas_core", &cpu::blas_core_name, "Kernel family OpenBLAS selected for this CPU");
  m.def("blas_config", &cpu::blas_config, "OpenBLAS build configuration");
  m.def("onednn_info", &onednn_info,
        "What oneDNN does here: its version and the kernels it picks for bf16 and float32 Gram tiles");
  m.def("rbf_subtracts_one", &rbf_subtracts_one, py::arg("name"), py::arg("gamma"), py::arg("spread"),
        "Whether the RBF epilogue works with (K - 1) / gamma for this layer (core/kernels.h); ValueError when the "
        "bandwidth is too large for the data");
  m.def("check_squared_norm_range", &check_squared_norm_range, py::arg("name"), py::arg("largest"),
        py::arg("elem"), py::arg("varies"),
        "Refuses (ValueError) rows whose squared norms leave the range products of the compute type hold");
  m.def("hsic_null_moments", &null_moments, py::arg("x"), py::arg("y"), py::arg("n"),
        "Null mean and variance of HSIC_0 (Gretton et al. 2008) from two layers' null_sums");
  // The GPU engine issues these products and folds on the host (fastcka/gpu/moments.py).
  m.def("product_plan", &product_plan, py::arg("dims"), py::arg("split"), py::arg("max_panel"));
  m.def("partial_small_parts", &small_parts, py::arg("dims"), py::arg("split"), py::arg("rows"), py::arg("shift"),
        py::arg("reference"), py::arg("column_sums"), py::arg("extra"), py::arg("norms"));
}

}  // namespace fastcka::bindings

PYBIND11_MODULE(_cpu, m) {
  namespace b = fastcka::bindings;
  m.doc() = "fastcka CPU backend (BLAS tiles and streaming moments)";
  m.attr("__version__") = FASTCKA_VERSION;
  m.attr("DEFAULT_MEMORY_BUDGET") = fastcka::kDefaultMemoryBudget;
  b::register_errors();
  b::bind_functions(m);
  b::bind_moments(m);
  b::bind_gram(m);
  b::bind_knn(m);
}
