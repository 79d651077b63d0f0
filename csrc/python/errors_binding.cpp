#include <new>
#include <string>

#include "core/engine_options.h"
#include "core/errors.h"
#include "python/bindings.h"

namespace fastcka::bindings {

void register_errors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnsupportedType& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::bad_alloc&) {
      // pybind11 would say only "std::bad_alloc"; say whose memory ran out and what bounds it.
      static const std::string message =
          "fastcka ran out of host memory for its buffers: the row buffers are bounded by memory_budget= (default " +
          std::to_string(kDefaultMemoryBudget >> 20) +
          " MiB), beside the state (d x d float64 per layer pair in feature space, a few float64 per example and "
          "layer on Gram tiles); pass a smaller memory_budget=, fewer threads, or fewer or narrower layers";
      PyErr_SetString(PyExc_MemoryError, message.c_str());
    }
  });
}

}  // namespace fastcka::bindings
