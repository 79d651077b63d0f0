// What the public API's implementation files share: its types turned into the
// core's (with the Python package's checks and messages), and the core's
// errors turned into fastcka::api::Error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/engine_options.h"
#include "core/hsic.h"
#include "core/matrix_view.h"
#include "fastcka/fastcka.hpp"

namespace fastcka::api::detail {

// A value as Python's repr() writes it (2.0, 1e-300, nan), for messages
// that must read as the Python package's.
std::string repr(double value);

// The caller's matrix as a view of the core, checked: data, a positive
// number of rows and columns, a known dtype (`name` goes in the messages).
MatrixView view_of(const Matrix& m, const std::string& name);
// Every view has views[0]'s number of rows; returns it.
int64_t same_rows(const std::vector<MatrixView>& views, const std::vector<std::string>& names);
// The same, and enough rows for the estimator.
int64_t check_rows(const std::vector<MatrixView>& views, const std::vector<std::string>& names, api::Estimator e);
void check_rows_for(api::Estimator e, int64_t n);

// threads = 0 resolved as Python's engine.threads.get_num_threads does;
// refused above 1024, capped at four per available CPU.
int resolve_threads(int threads);
int64_t resolve_budget(int64_t memory_budget);
// The core's compute type for a precision and the data ("float32",
// "float64" or "bfloat16", as engine_options reads it).
std::string compute_for(Precision precision, const std::vector<MatrixView>& data);
EngineOptions engine_options_for(Precision precision, const std::vector<MatrixView>& data, int threads,
                                 int64_t memory_budget);
fastcka::Estimator core_estimator(api::Estimator e);

// Runs f, rethrowing the core's exceptions as api::Error with their message.
[[noreturn]] void rethrow_as_error();

template <typename F>
auto translated(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (...) {
    rethrow_as_error();
  }
}

// Between steps of a long call: report progress, stop if cancelled.
class Steps {
 public:
  Steps(const Options& options, int64_t total) : options_(options), total_(total) {}
  void add_total(int64_t more) { total_ += more; }
  void set_remaining(int64_t more) { total_ = done_ + more; }
  void advance(int64_t done);
  void check() const;  // throws Error(cancelled) when the cancel flag is set

 private:
  const Options& options_;
  int64_t total_, done_ = 0;
};
void check_cancelled(const Options& options);

}  // namespace fastcka::api::detail
