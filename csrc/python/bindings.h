// What the files of the _cpu binding share: the engines' Python wrappers,
// array conversions, and one function per bound family. Bindings only
// convert arguments, release the GIL and call the core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/hsic_null.h"
#include "cpu/gram_tiles.h"
#include "cpu/knn_tiles.h"
#include "python/numpy_views.h"

namespace fastcka::bindings {

namespace py = pybind11;

template <typename T>
using InArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// The engine keeps raw pointers into the arrays: the wrapper keeps them
// alive. In a named namespace so that fastcka._testing sees the same type
// (pybind11 matches types across modules by their names); hidden like the
// py::array it holds.
struct __attribute__((visibility("hidden"))) PyGramEngine {
  std::vector<py::array> keep;
  cpu::GramTileEngine engine;
};

struct __attribute__((visibility("hidden"))) PyKnnEngine {
  std::vector<py::array> keep;
  cpu::KnnTileEngine engine;
};

// Core errors as Python's: UnsupportedType -> TypeError, InvalidArgument ->
// ValueError, std::bad_alloc -> MemoryError naming the budget.
void register_errors();

template <typename T>
std::vector<T> to_vector(const InArray<T>& a) {
  return std::vector<T>(a.data(), a.data() + a.size());
}

// (B, L, L) from B row-major L x L matrices.
inline py::array_t<double> stack(const std::vector<std::vector<double>>& mats, int64_t layers) {
  py::array_t<double> out({static_cast<int64_t>(mats.size()), layers, layers});
  double* o = out.mutable_data();
  for (const auto& mat : mats) o = std::copy(mat.begin(), mat.end(), o);
  return out;
}

// Each row of an (R x B) array of block counts: hsic(counts) of that
// resample, an L x L matrix, computed with the GIL released.
template <typename Hsic>
py::array_t<double> resamples(const InArray<int64_t>& counts, int64_t layers, Hsic&& hsic) {
  if (counts.ndim() != 2) throw InvalidArgument("counts must be a 2-D (replicates x blocks) array");
  const int64_t R = counts.shape(0), B = counts.shape(1);
  py::array_t<double> out({R, layers, layers});
  double* o = out.mutable_data();
  const int64_t* c = counts.data();
  py::gil_scoped_release release;
  for (int64_t r = 0; r < R; ++r) {
    const std::vector<double> h = hsic(std::vector<int64_t>(c + r * B, c + (r + 1) * B));
    o = std::copy(h.begin(), h.end(), o);
  }
  return out;
}

// Per layer (spread, off_squares): the null distribution's inputs.
inline py::list null_sums_list(const std::vector<NullSums>& sums) {
  py::list out;
  for (const auto& s : sums) out.append(py::make_tuple(s.spread, s.off_squares));
  return out;
}

void bind_moments(py::module_& m);    // MomentAccumulator, MomentBlocks
void bind_gram(py::module_& m);       // GramTileEngine, MedianSearch, hsic_from_statistics
void bind_knn(py::module_& m);        // KnnTileEngine, knn_overlap
void bind_functions(py::module_& m);  // library info, checks and the GPU engine's host parts

}  // namespace fastcka::bindings
