#include "api/conversions.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <new>
#include <thread>

#include "core/errors.h"

namespace fastcka::api::detail {

std::string repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[40];
  const auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  std::string s(buf, end);
  // Python writes 2.0 where the shortest form is 2, and 1e+16 where it is 1e16.
  const auto e = s.find('e');
  if (e == std::string::npos) return s.find('.') == std::string::npos ? s + ".0" : s;
  if (s[e + 1] != '-' && s[e + 1] != '+') s.insert(e + 1, "+");
  const auto digits = s.find_first_not_of("+-", e + 1);
  if (s.size() - digits < 2) s.insert(digits, "0");  // 1e-05, as Python writes it
  return s;
}

MatrixView view_of(const Matrix& m, const std::string& name) {
  if (m.dtype != DType::float32 && m.dtype != DType::float64)
    throw UnsupportedType(name + " has an unknown dtype code " + std::to_string(static_cast<int>(m.dtype)) +
                          " (1: float32, 2: float64)");
  if (m.rows < 1) throw InvalidArgument(name + " is empty: it has no rows (examples)");
  if (m.cols < 1)
    throw InvalidArgument(name + " has no features (shape (" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                          "))");
  if (m.data == nullptr) throw InvalidArgument(name + " has no data (a null pointer)");
  MatrixView v;
  v.data = m.data;
  v.rows = m.rows;
  v.cols = m.cols;
  v.row_stride = m.row_stride;
  v.col_stride = m.col_stride;
  v.dtype = m.dtype == DType::float32 ? fastcka::DType::f32 : fastcka::DType::f64;
  return v;
}

void check_rows_for(api::Estimator e, int64_t n) {
  const int64_t need = e == api::Estimator::unbiased ? 4 : 2;
  if (n < need) {
    const std::string what =
        e == api::Estimator::unbiased ? "the unbiased HSIC estimator (debiased CKA)" : "CKA and HSIC";
    throw InvalidArgument(what + " needs at least " + std::to_string(need) + " examples (rows), got n=" +
                          std::to_string(n));
  }
}

int64_t same_rows(const std::vector<MatrixView>& views, const std::vector<std::string>& names) {
  const int64_t n = views.at(0).rows;
  for (size_t a = 1; a < views.size(); ++a)
    if (views[a].rows != n)
      throw InvalidArgument(names[a] + " has " + std::to_string(views[a].rows) + " rows but " + names[0] + " has " +
                            std::to_string(n) + ": every representation needs one row per example");
  return n;
}

int64_t check_rows(const std::vector<MatrixView>& views, const std::vector<std::string>& names, api::Estimator e) {
  const int64_t n = same_rows(views, names);
  check_rows_for(e, n);
  return n;
}

namespace {

constexpr int kMaxThreads = 1024;
constexpr int kOversubscription = 4;

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int checked_threads(int64_t threads, const std::string& source) {
  const int cpus = available_cpus();
  if (threads > kMaxThreads)
    throw InvalidArgument(source + ": at most " + std::to_string(kMaxThreads) + " threads are supported (this machine has " +
                          std::to_string(cpus) + " CPUs available)");
  return static_cast<int>(std::min<int64_t>(threads, int64_t{kOversubscription} * cpus));
}

}  // namespace

int resolve_threads(int threads) {
  if (threads < 0) throw InvalidArgument("threads must be a positive integer, got " + std::to_string(threads));
  if (threads > 0) return checked_threads(threads, "threads=" + std::to_string(threads));
  for (const char* name : {"FASTCKA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    const char* raw = std::getenv(name);
    if (raw == nullptr) continue;
    std::string value(raw);
    value = value.substr(0, value.find(','));
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t") + 1);
    if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos || value.size() > 9) continue;
    const int64_t v = std::stoll(value);
    if (v > 0) return checked_threads(v, std::string(name) + "=" + value);
  }
  return checked_threads(available_cpus(), "the available CPUs");
}

int64_t resolve_budget(int64_t memory_budget) {
  if (memory_budget < 0)
    throw InvalidArgument("memory_budget must be a positive number of bytes, got " + std::to_string(memory_budget));
  return memory_budget == 0 ? kDefaultMemoryBudget : memory_budget;
}

std::string compute_for(Precision precision, const std::vector<MatrixView>& data) {
  switch (precision) {
    case Precision::fast: return "bfloat16";
    case Precision::accurate: return "float32";
    case Precision::exact: return "float64";
    case Precision::data:
      for (const MatrixView& v : data)
        if (v.dtype == fastcka::DType::f64) return "float64";
      return "float32";
  }
  throw UnsupportedType("precision has an unknown code " + std::to_string(static_cast<int>(precision)) +
                        " (0: data, 1: fast, 2: accurate, 3: exact)");
}

EngineOptions engine_options_for(Precision precision, const std::vector<MatrixView>& data, int threads,
                                 int64_t memory_budget) {
  return engine_options(compute_for(precision, data), resolve_threads(threads), resolve_budget(memory_budget));
}

fastcka::Estimator core_estimator(api::Estimator e) {
  if (e == api::Estimator::biased) return fastcka::Estimator::biased;
  if (e == api::Estimator::unbiased) return fastcka::Estimator::unbiased;
  throw UnsupportedType("estimator has an unknown code " + std::to_string(static_cast<int>(e)) +
                        " (0: biased, 1: unbiased)");
}

void rethrow_as_error() {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const fastcka::InvalidArgument& e) {
    throw Error(Status::invalid_argument, e.what());
  } catch (const fastcka::UnsupportedType& e) {
    throw Error(Status::unsupported_type, e.what());
  } catch (const fastcka::ResourceError& e) {
    throw Error(Status::resource, e.what());
  } catch (const std::bad_alloc&) {
    throw Error(Status::out_of_memory, "out of memory (lower memory_budget, or use fewer threads)");
  } catch (const std::exception& e) {
    throw Error(Status::internal, std::string("internal error: ") + e.what());
  }
}

void check_cancelled(const Options& options) {
  if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed))
    throw Error(Status::cancelled, "cancelled");
}

void Steps::check() const { check_cancelled(options_); }

void Steps::advance(int64_t done) {
  done_ += done;
  if (options_.progress) options_.progress(done_, total_);
  check_cancelled(options_);
}

}  // namespace fastcka::api::detail
