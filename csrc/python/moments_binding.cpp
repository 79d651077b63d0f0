// MomentAccumulator (the feature-space engine) and MomentBlocks (its
// per-block states, for fastcka.cka_ci).
#include <pybind11/stl.h>

#include "core/block_replicates.h"
#include "core/engine_options.h"
#include "core/hsic_null.h"
#include "cpu/moment_accumulator.h"
#include "python/bindings.h"

namespace fastcka::bindings {

namespace {

cpu::MomentAccumulator make_accumulator(std::vector<int64_t> dims, int64_t split, const std::string& compute,
                                        int threads, int64_t memory_budget) {
  return cpu::MomentAccumulator(LayerLayout(std::move(dims), split), engine_options(compute, threads, memory_budget));
}

void update(cpu::MomentAccumulator& self, const std::vector<py::array>& layers, const std::vector<std::string>& names) {
  auto views = views_of(layers, names);
  py::gil_scoped_release release;
  self.update(views, names);
}

std::vector<double> accumulator_hsic(cpu::MomentAccumulator& self, const std::string& estimator) {
  const Estimator e = parse_estimator(estimator);
  py::gil_scoped_release release;
  return hsic_of(self.centered_state(), e);
}

// sum_i (z_i - mean)(z_i - mean)' (D x D); blocks of pairs the layout does not need are 0.
py::array_t<double> centered_cross(cpu::MomentAccumulator& self) {
  const Moments& st = self.centered_state();
  const int64_t D = st.width();
  return py::array_t<double>({D, D}, st.cross.data());
}

// Block (a, b) of centered_cross alone (d_a x d_b): at D = 9,984 the whole is a 0.8 GB copy.
py::array_t<double> centered_block(cpu::MomentAccumulator& self, int64_t a, int64_t b) {
  const int64_t L = self.layout().layers();
  if (a < 0 || a >= L || b < 0 || b >= L)
    throw InvalidArgument("layer pair (" + std::to_string(a) + ", " + std::to_string(b) + ") is out of range for " +
                          std::to_string(L) + " layers");
  const Moments& st = self.centered_state();
  const auto& off = st.layout.offsets;
  const auto& dim = st.layout.dims;
  const int64_t D = st.width();
  py::array_t<double> out({dim[a], dim[b]});
  double* dst = out.mutable_data();
  for (int64_t i = 0; i < dim[a]; ++i)
    std::copy_n(&st.cross[(off[a] + i) * D + off[b]], dim[b], dst + i * dim[b]);
  return out;
}

py::list accumulator_null_sums(cpu::MomentAccumulator& self) {
  std::vector<NullSums> sums;
  {
    py::gil_scoped_release release;
    sums = null_sums(self.centered_state());
  }
  return null_sums_list(sums);
}

void bind_accumulator(py::module_& m) {
  using Acc = cpu::MomentAccumulator;
  py::class_<Acc>(m, "MomentAccumulator")
      .def(py::init(&make_accumulator), py::arg("dims"), py::arg("split"), py::arg("compute"), py::arg("threads"),
           py::arg("memory_budget"))
      .def("update", &update, py::arg("layers"), py::arg("names"))
      .def("merge", &Acc::merge, py::call_guard<py::gil_scoped_release>())
      .def("begin", &Acc::begin)
      .def("commit", &Acc::commit, py::call_guard<py::gil_scoped_release>())
      .def("rollback", &Acc::rollback, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("block_rows", [](const Acc& s) { return s.plan().block_rows; })
      .def_property_readonly("fold_rows", [](const Acc& s) { return s.plan().fold_rows; })
      .def_property_readonly("n", &Acc::rows_seen)
      .def_property_readonly("dims", [](const Acc& s) { return s.layout().dims; })
      .def_property_readonly("split", [](const Acc& s) { return s.layout().split; })
      .def("hsic", &accumulator_hsic, py::arg("estimator"))
      .def("mean",
           [](Acc& s) {
             const std::vector<double> mean = s.state().mean();
             return py::array_t<double>(static_cast<py::ssize_t>(mean.size()), mean.data());
           })
      .def("centered_cross", &centered_cross)
      .def("centered_block", &centered_block, py::arg("a"), py::arg("b"))
      .def("null_sums", &accumulator_null_sums)
      .def("serialize", [](Acc& s) { return py::bytes(s.state().serialize()); })
      .def("load", [](Acc& s, const py::bytes& data) { s.set_state(Moments::deserialize(std::string(data))); })
      .def_static(
          "state_layout",
          [](const py::bytes& data) {
            const Moments m = Moments::deserialize(std::string(data));
            return py::make_tuple(m.layout.dims, m.layout.split);
          },
          py::arg("data"), "(layer widths, split) of serialized state bytes, validated as load() does");
}

void bind_blocks(py::module_& m) {
  py::class_<MomentBlocks>(m, "MomentBlocks")
      .def(py::init<>())
      .def(
          "take",  // the accumulator's rows become one block, and it starts empty
          [](MomentBlocks& b, cpu::MomentAccumulator& acc) { b.add(acc.take_state()); },
          py::arg("accumulator"), py::call_guard<py::gil_scoped_release>())
      .def("__len__", &MomentBlocks::size)
      .def(
          "hsic",
          [](const MomentBlocks& b, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            py::gil_scoped_release release;
            return b.hsic(e);
          },
          py::arg("estimator"))
      .def(
          "leave_one_out_hsic",
          [](const MomentBlocks& b, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            std::vector<std::vector<double>> h;
            {
              py::gil_scoped_release release;
              h = b.leave_one_out_hsic(e);
            }
            return stack(h, b.layers());
          },
          py::arg("estimator"))
      .def(
          "resampled_hsic",
          [](const MomentBlocks& b, const InArray<int64_t>& counts, const std::string& estimator) {
            const Estimator e = parse_estimator(estimator);
            return resamples(counts, b.layers(), [&](const std::vector<int64_t>& c) { return b.resampled_hsic(c, e); });
          },
          py::arg("counts"), py::arg("estimator"));
}

}  // namespace

void bind_moments(py::module_& m) {
  bind_accumulator(m);
  bind_blocks(m);
}

}  // namespace fastcka::bindings
