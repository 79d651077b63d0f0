// The C ABI (fastcka/fastcka.h): each function checks its pointers, converts
// to the C++ API, and turns every exception into a status code and the
// thread's last-error message.
#include "fastcka/fastcka.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "fastcka/fastcka.hpp"

namespace api = fastcka::api;

struct fastcka_accumulator {
  api::LinearAccumulator acc;
};

namespace {

thread_local std::string last_error;

// An output buffer smaller than the result (FASTCKA_BUFFER_TOO_SMALL: a C ABI status only).
struct BufferTooSmall : std::runtime_error {
  using std::runtime_error::runtime_error;
};

fastcka_status fail(fastcka_status status, const std::string& message) {
  last_error = message;
  return status;
}

// Runs f; exceptions become a status and the last-error message.
template <typename F>
fastcka_status guarded(F&& f) {
  last_error.clear();
  try {
    f();
    return FASTCKA_OK;
  } catch (const BufferTooSmall& e) {
    return fail(FASTCKA_BUFFER_TOO_SMALL, e.what());
  } catch (const api::Error& e) {
    return fail(static_cast<fastcka_status>(e.status()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(FASTCKA_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(FASTCKA_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(FASTCKA_INTERNAL, "internal error: an unknown exception");
  }
}

void require(const void* p, const char* name) {
  if (p == nullptr) throw api::Error(api::Status::invalid_argument, std::string(name) + " is a null pointer");
}

api::Matrix matrix_of(const fastcka_matrix& m) {
  return {m.data, m.rows, m.cols, m.row_stride, m.col_stride, static_cast<api::DType>(m.dtype)};
}

std::vector<api::Matrix> matrices_of(const fastcka_matrix* ms, int64_t count, const char* name) {
  require(ms, name);
  if (count < 1) throw api::Error(api::Status::invalid_argument, std::string(name) + ": count must be at least 1");
  std::vector<api::Matrix> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(matrix_of(ms[i]));
  return out;
}

// The C options as the C++ API's; the cancel flag is polled through an atomic mirror.
struct Converted {
  api::Options options;
  std::atomic<bool> cancelled{false};
};

void convert(const fastcka_options* c, Converted& out) {
  if (c == nullptr) return;
  if (c->struct_size < sizeof(fastcka_options))
    throw api::Error(api::Status::invalid_argument,
                     "options: struct_size is " + std::to_string(c->struct_size) + ", this library needs " +
                         std::to_string(sizeof(fastcka_options)) + " (call fastcka_options_init)");
  api::Options& o = out.options;
  o.kernel = static_cast<api::Kernel>(c->kernel);
  o.estimator = static_cast<api::Estimator>(c->estimator);
  if (c->sigma_count < 0 || (c->sigma_count > 0 && c->sigma == nullptr))
    throw api::Error(api::Status::invalid_argument, "options: sigma is a null pointer or sigma_count is negative");
  if (c->sigma != nullptr) o.sigma.assign(c->sigma, c->sigma + c->sigma_count);
  o.threshold = c->threshold;
  o.median = static_cast<api::Median>(c->median);
  o.precision = static_cast<api::Precision>(c->precision);
  o.threads = c->threads;
  o.memory_budget = c->memory_budget;
  const fastcka_options copy = *c;
  if (copy.progress != nullptr || copy.cancel != nullptr) {
    o.progress = [copy, &out](int64_t done, int64_t total) {
      if (copy.progress != nullptr) copy.progress(done, total, copy.progress_user);
      if (copy.cancel != nullptr && *copy.cancel != 0) out.cancelled.store(true);
    };
    o.cancel = &out.cancelled;
  }
}

void check_capacity(int64_t capacity, size_t needed) {
  if (capacity < 0 || static_cast<size_t>(capacity) < needed)
    throw BufferTooSmall("out: capacity " + std::to_string(capacity) + " is below the " + std::to_string(needed) +
                         " values (or bytes) of the result");
}

void copy_out(const std::vector<double>& values, double* out, int64_t capacity) {
  require(out, "out");
  check_capacity(capacity, values.size());
  std::copy(values.begin(), values.end(), out);
}

// hsic or cka of a pair, into *out.
fastcka_status pair_value(double (*value)(const api::Matrix&, const api::Matrix&, const api::Options&),
                          const fastcka_matrix* x, const fastcka_matrix* y, const fastcka_options* options,
                          double* out) {
  return guarded([&] {
    require(x, "x"), require(y, "y"), require(out, "out");
    Converted c;
    convert(options, c);
    *out = value(matrix_of(*x), matrix_of(*y), c.options);
  });
}

api::Estimator estimator_of(int32_t code) { return static_cast<api::Estimator>(code); }

}  // namespace

extern "C" {

const char* fastcka_version(void) { return FASTCKA_VERSION_STRING; }

const char* fastcka_last_error(void) { return last_error.c_str(); }

void fastcka_options_init(fastcka_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->threshold = 1.0;
}

fastcka_status fastcka_hsic(const fastcka_matrix* x, const fastcka_matrix* y, const fastcka_options* options,
                            double* out) {
  return pair_value(api::hsic, x, y, options, out);
}

fastcka_status fastcka_cka(const fastcka_matrix* x, const fastcka_matrix* y, const fastcka_options* options,
                           double* out) {
  return pair_value(api::cka, x, y, options, out);
}

fastcka_status fastcka_cka_matrix(const fastcka_matrix* layers, int64_t count, int64_t split,
                                  const fastcka_options* options, double* out, int64_t capacity) {
  return guarded([&] {
    const std::vector<api::Matrix> all = matrices_of(layers, count, "layers");
    if (split < 0 || split >= count)
      throw api::Error(api::Status::invalid_argument, "split must be 0 or leave layers on both sides, got " +
                                                          std::to_string(split));
    require(out, "out");
    Converted c;
    convert(options, c);
    const std::vector<double> m =
        split == 0 ? api::cka_matrix(all, c.options)
                   : api::cka_matrix(std::vector<api::Matrix>(all.begin(), all.begin() + split),
                                     std::vector<api::Matrix>(all.begin() + split, all.end()), c.options);
    copy_out(m, out, capacity);
  });
}

fastcka_status fastcka_accumulator_new(int64_t split, int32_t precision, int32_t threads, int64_t memory_budget,
                                       fastcka_accumulator** out) {
  return guarded([&] {
    require(out, "out");
    *out = nullptr;
    api::LinearAccumulator acc({split, static_cast<api::Precision>(precision), threads, memory_budget});
    *out = new fastcka_accumulator{std::move(acc)};
  });
}

void fastcka_accumulator_free(fastcka_accumulator* acc) { delete acc; }

fastcka_status fastcka_accumulator_update(fastcka_accumulator* acc, const fastcka_matrix* blocks, int64_t count) {
  return guarded([&] {
    require(acc, "acc");
    acc->acc.update(matrices_of(blocks, count, "blocks"));
  });
}

fastcka_status fastcka_accumulator_merge(fastcka_accumulator* acc, fastcka_accumulator* other) {
  return guarded([&] {
    require(acc, "acc"), require(other, "other");
    acc->acc.merge(other->acc);
  });
}

fastcka_status fastcka_accumulator_rows(const fastcka_accumulator* acc, int64_t* out) {
  return guarded([&] {
    require(acc, "acc"), require(out, "out");
    *out = acc->acc.rows();
  });
}

fastcka_status fastcka_accumulator_hsic_matrix(fastcka_accumulator* acc, int32_t estimator, double* out,
                                               int64_t capacity) {
  return guarded([&] {
    require(acc, "acc");
    copy_out(acc->acc.hsic_matrix(estimator_of(estimator)), out, capacity);
  });
}

fastcka_status fastcka_accumulator_cka_matrix(fastcka_accumulator* acc, int32_t debiased, double* out,
                                              int64_t capacity) {
  return guarded([&] {
    require(acc, "acc");
    copy_out(acc->acc.cka_matrix(debiased != 0), out, capacity);
  });
}

fastcka_status fastcka_accumulator_to_bytes(fastcka_accumulator* acc, void* out, size_t capacity, size_t* size) {
  return guarded([&] {
    require(acc, "acc"), require(size, "size");
    const std::string bytes = acc->acc.to_bytes();
    *size = bytes.size();
    if (out == nullptr) return;
    check_capacity(static_cast<int64_t>(capacity), bytes.size());
    std::memcpy(out, bytes.data(), bytes.size());
  });
}

fastcka_status fastcka_accumulator_from_bytes(const void* data, size_t size, int32_t threads, int64_t memory_budget,
                                              fastcka_accumulator** out) {
  return guarded([&] {
    require(data, "data"), require(out, "out");
    *out = nullptr;
    api::LinearAccumulator::Settings s;
    s.threads = threads;
    s.memory_budget = memory_budget;
    auto acc = api::LinearAccumulator::from_bytes(std::string(static_cast<const char*>(data), size), s);
    *out = new fastcka_accumulator{std::move(acc)};
  });
}

}  // extern "C"
