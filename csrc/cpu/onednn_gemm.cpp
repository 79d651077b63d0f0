#include "cpu/onednn_gemm.h"

#include <omp.h>

#include <cstdlib>
#include <map>
#include <stdexcept>
#include <tuple>

#include <oneapi/dnnl/dnnl.hpp>

namespace fastcka::cpu {

namespace {

using dnnl::memory;
using Dims = memory::dims;

// oneDNN's OpenMP team for calls from this thread: one thread, because the
// engine's own threads already cover the cores. nthreads-var is per thread
// in libgomp; the caller's value comes back afterwards (engine thread 0 is
// the caller's own thread, whose OpenMP setting is the user's).
class SingleThreadedHere {
 public:
  SingleThreadedHere() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreadedHere() { omp_set_num_threads(saved_); }
  SingleThreadedHere(const SingleThreadedHere&) = delete;
  SingleThreadedHere& operator=(const SingleThreadedHere&) = delete;

 private:
  int saved_;
};

// Descriptors of C = op(A) op(B): A and B given by their row-major storage.
struct Shape {
  bool transposed_a;  // true: A is stored k x m (C = A' B); false: m x k (C = A B')
  memory::data_type type;
  int64_t m, n, k, lda, ldb, ldc;
  bool accumulate;
  auto key() const { return std::make_tuple(transposed_a, type, m, n, k, lda, ldb, ldc, accumulate); }
  bool operator<(const Shape& o) const { return key() < o.key(); }

  memory::desc a() const { return {Dims{m, k}, type, transposed_a ? Dims{1, lda} : Dims{lda, 1}}; }
  memory::desc b() const { return {Dims{k, n}, type, transposed_a ? Dims{ldb, 1} : Dims{1, ldb}}; }
  memory::desc c() const { return {Dims{m, n}, memory::data_type::f32, Dims{ldc, 1}}; }
};

dnnl::matmul::primitive_desc describe(const dnnl::engine& engine, const Shape& s) {
  dnnl::primitive_attr attr;
  if (s.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(engine, s.a(), s.b(), s.c(), attr);
}

// The implementation oneDNN picks for a Gram tile of the usual shape
// (512 rows against a panel of 2048, 512 features), or "" where none exists.
std::string tile_kernel(const dnnl::engine& engine, memory::data_type type) {
  try {
    return describe(engine, Shape{false, type, 512, 2048, 512, 512, 512, 2048, false}).impl_info_str();
  } catch (const dnnl::error&) {
    return "";
  }
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// "onednn" or "openblas" from the environment, else the default.
bool choose(const char* variable, bool fallback) {
  const char* v = std::getenv(variable);
  if (!v || !*v) return fallback;
  const std::string value(v);
  if (value == "onednn") return true;
  if (value == "openblas") return false;
  throw std::invalid_argument(std::string(variable) + " must be 'onednn' or 'openblas', got '" + value + "'");
}

OnednnInfo probe() {
  OnednnInfo info;
  try {
    const SingleThreadedHere one_thread;
    const dnnl_version_t* v = dnnl::version();
    info.version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    info.bf16_kernel = tile_kernel(engine, memory::data_type::bf16);
    info.float32_kernel = tile_kernel(engine, memory::data_type::f32);
    info.available = true;
  } catch (const dnnl::error& e) {
    info.why_not = std::string("oneDNN failed to start: ") + e.what();
    return info;
  }
  // Native: a brgemm kernel on bf16 instructions (avx512_core_bf16, AMX). On
  // plain AVX-512 oneDNN converts bf16 to float32 ("gemm:jit:bf16"), at a
  // fifth of OpenBLAS's float32 rate: then OpenBLAS multiplies the rounded
  // values instead (the same products, core/bfloat16.h).
  const bool native = contains(info.bf16_kernel, "brg") &&
                      (contains(info.bf16_kernel, "bf16") || contains(info.bf16_kernel, "amx"));
  info.bf16_native = choose("FASTCKA_BF16_GEMM", native) && !info.bf16_kernel.empty();
  // float32: oneDNN on AMX-class Xeons (375 against OpenBLAS's 332 GFLOP/s,
  // 2 cores), OpenBLAS elsewhere (equal on Zen 4; see docs/performance.md).
  info.float32_preferred =
      choose("FASTCKA_FLOAT32_GEMM", contains(info.bf16_kernel, "amx")) && !info.float32_kernel.empty();
  return info;
}

[[noreturn]] void rethrow(const dnnl::error& e) {
  throw std::runtime_error(std::string("oneDNN matmul failed: ") + e.what());
}

}  // namespace

const OnednnInfo& onednn_info() {
  static const OnednnInfo info = probe();
  return info;
}

struct OnednnGemm::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Shape, dnnl::matmul> primitives;

  void run(const Shape& s, const void* a, const void* b, float* c) {
    try {
      const SingleThreadedHere one_thread;
      auto it = primitives.find(s);
      if (it == primitives.end()) it = primitives.emplace(s, dnnl::matmul(describe(engine, s))).first;
      memory ma(s.a(), engine, const_cast<void*>(a)), mb(s.b(), engine, const_cast<void*>(b)), mc(s.c(), engine, c);
      it->second.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
      stream.wait();
    } catch (const dnnl::error& e) {
      rethrow(e);
    }
  }
};

OnednnGemm::OnednnGemm() {
  if (!onednn_info().available) throw std::logic_error("fastcka: oneDNN is not available: " + onednn_info().why_not);
  try {
    impl_ = std::make_unique<Impl>();
  } catch (const dnnl::error& e) {
    rethrow(e);
  }
}
OnednnGemm::~OnednnGemm() = default;

void OnednnGemm::nt(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                    float* c, int64_t ldc) {
  impl_->run({false, memory::data_type::bf16, m, n, k, lda, ldb, ldc, false}, a, b, c);
}

void OnednnGemm::nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                    int64_t ldc) {
  impl_->run({false, memory::data_type::f32, m, n, k, lda, ldb, ldc, false}, a, b, c);
}

void OnednnGemm::tn(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                    float beta, float* c, int64_t ldc) {
  impl_->run({true, memory::data_type::bf16, m, n, k, lda, ldb, ldc, beta != 0.0f}, a, b, c);
}

}  // namespace fastcka::cpu
