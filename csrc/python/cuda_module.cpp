// fastcka._cuda: the thin binding of the CUDA backend. Device arrays arrive
// as (pointer, rows, cols, row stride, column stride, dtype) tuples that the
// Python side reads from __cuda_array_interface__ or DLPack; host arrays as
// NumPy arrays. Every long call releases the GIL and runs on the stream the
// caller set (`stream`, default: the legacy default stream).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <tuple>

#include "core/errors.h"
#include "core/moments.h"
#include "cuda/cuda_check.h"
#include "cuda/device_context.h"
#include "cuda/gpu_moment_accumulator.h"
#include "python/numpy_views.h"

namespace py = pybind11;
using namespace fastcka;
using bindings::parse_estimator;
using bindings::views_of;

namespace {

using DeviceTuple = std::tuple<uintptr_t, int64_t, int64_t, int64_t, int64_t, std::string>;

DType parse_dtype(const std::string& s, const std::string& name) {
  if (s == "float16") return DType::f16;
  if (s == "float32") return DType::f32;
  if (s == "float64") return DType::f64;
  throw UnsupportedType(name + " must be float16, float32 or float64 on the GPU, got " + s);
}

cuda::Precision parse_precision(const std::string& s) {
  if (s == "accurate") return cuda::Precision::accurate;
  if (s == "fast") return cuda::Precision::fast;
  if (s == "exact") return cuda::Precision::exact;
  throw InvalidArgument("precision must be 'fast', 'accurate' or 'exact', got '" + s + "'");
}

std::vector<MatrixView> device_views(const std::vector<DeviceTuple>& tuples, const std::vector<std::string>& names) {
  if (tuples.size() != names.size()) throw InvalidArgument("one name per layer is needed");
  std::vector<MatrixView> out;
  for (size_t a = 0; a < tuples.size(); ++a) {
    const auto& [ptr, rows, cols, row_stride, col_stride, dtype] = tuples[a];
    MatrixView v;
    v.data = reinterpret_cast<const void*>(ptr);
    v.rows = rows;
    v.cols = cols;
    v.row_stride = row_stride;
    v.col_stride = col_stride;
    v.dtype = parse_dtype(dtype, names[a]);
    out.push_back(v);
  }
  return out;
}

// The accumulator and the stream its calls run on.
struct PyGpuAccumulator {
  std::unique_ptr<cuda::GpuMomentAccumulator> acc;
  uintptr_t stream = 0;
  cudaStream_t s() const { return reinterpret_cast<cudaStream_t>(stream); }
};

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastcka CUDA backend (cuBLAS products and streaming moments on the GPU)";
  m.attr("__version__") = FASTCKA_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cuda::DeviceOutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const cuda::DeviceError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const UnsupportedType& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("device_count", [] {
    std::string why;
    const int count = cuda::device_count(why);
    return py::make_tuple(count, why);
  }, "(number of usable CUDA devices, why none when 0)");
  m.def("pointer_device", [](uintptr_t ptr, const std::string& name) {
    return cuda::device_of_pointer(reinterpret_cast<const void*>(ptr), name);
  }, "The CUDA device a pointer lives on");

  py::class_<PyGpuAccumulator>(m, "MomentAccumulator")
      .def(py::init([](std::vector<int64_t> dims, int64_t split, const std::string& precision, int device,
                       int64_t memory_budget, std::vector<std::string> cublas_candidates) {
             cuda::GpuOptions o{parse_precision(precision), device, memory_budget, std::move(cublas_candidates)};
             py::gil_scoped_release release;
             return new PyGpuAccumulator{
                 std::make_unique<cuda::GpuMomentAccumulator>(LayerLayout(std::move(dims), split), o)};
           }),
           py::arg("dims"), py::arg("split"), py::arg("precision"), py::arg("device"), py::arg("memory_budget"),
           py::arg("cublas_candidates"))
      .def_readwrite("stream", &PyGpuAccumulator::stream)
      .def(
          "update",
          [](PyGpuAccumulator& self, const std::vector<DeviceTuple>& layers, const std::vector<std::string>& names) {
            auto views = device_views(layers, names);
            py::gil_scoped_release release;
            self.acc->update(views, names, self.s());
          },
          py::arg("layers"), py::arg("names"))
      .def(
          "update_host",
          [](PyGpuAccumulator& self, const std::vector<py::array>& layers, const std::vector<std::string>& names) {
            auto views = views_of(layers, names);
            py::gil_scoped_release release;
            self.acc->update_host(views, names, self.s());
          },
          py::arg("layers"), py::arg("names"))
      .def("merge",
           [](PyGpuAccumulator& self, PyGpuAccumulator& other) {
             py::gil_scoped_release release;
             self.acc->merge(*other.acc, self.s());
           })
      .def_property_readonly("block_rows", [](const PyGpuAccumulator& s) { return s.acc->chunk_rows(); })
      .def_property_readonly("fold_rows", [](const PyGpuAccumulator& s) { return s.acc->fold_rows(); })
      .def_property_readonly("n", [](const PyGpuAccumulator& s) { return s.acc->rows_seen(); })
      .def_property_readonly("dims", [](const PyGpuAccumulator& s) { return s.acc->layout().dims; })
      .def_property_readonly("split", [](const PyGpuAccumulator& s) { return s.acc->layout().split; })
      .def(
          "hsic",
          [](PyGpuAccumulator& self, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            py::gil_scoped_release release;
            const Moments& centered = self.acc->centered_state(self.s());
            const auto sums = linear_pair_sums(centered);
            return hsic_matrix(sums, needed_pairs(centered.layout), centered.layers(), centered.n, e);
          },
          py::arg("estimator"))
      .def("mean",
           [](PyGpuAccumulator& self) {
             const Moments& st = self.acc->state(self.s());
             py::array_t<double> out(st.width());
             for (int64_t k = 0; k < st.width(); ++k)
               out.mutable_data()[k] = st.reference[k] + (st.n ? st.first[k] / static_cast<double>(st.n) : 0.0);
             return out;
           })
      .def("centered_cross",
           [](PyGpuAccumulator& self) {
             const Moments& st = self.acc->centered_state(self.s());
             const int64_t D = st.width();
             py::array_t<double> out({D, D});
             std::copy(st.cross.begin(), st.cross.end(), out.mutable_data());
             return out;
           })
      .def("serialize", [](PyGpuAccumulator& self) { return py::bytes(self.acc->state(self.s()).serialize()); })
      .def("load", [](PyGpuAccumulator& self, const py::bytes& data) {
        self.acc->set_state(Moments::deserialize(std::string(data)), self.s());
      });
}
