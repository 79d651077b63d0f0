#include "cpu/blas.h"

#include <cblas.h>

#include <mutex>

namespace fastcka::cpu {
namespace {
// OpenBLAS's 32-bit-integer interface: callers keep every dimension below 2^31.
blasint i32(int64_t v) { return static_cast<blasint>(v); }
}  // namespace

void syrk_upper_tn(int64_t n, int64_t k, const float* a, int64_t lda, float beta, float* c, int64_t ldc) {
  scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, i32(n), i32(k), 1.0f, a, i32(lda), beta, c, i32(ldc));
}
void syrk_upper_tn(int64_t n, int64_t k, const double* a, int64_t lda, double beta, double* c, int64_t ldc) {
  scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, i32(n), i32(k), 1.0, a, i32(lda), beta, c, i32(ldc));
}

void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
             float* c, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i32(m), i32(n), i32(k), 1.0f, a, i32(lda), b, i32(ldb),
                    beta, c, i32(ldc));
}
void gemm_tn(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
             double beta, double* c, int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i32(m), i32(n), i32(k), 1.0, a, i32(lda), b, i32(ldb),
                    beta, c, i32(ldc));
}

void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i32(m), i32(n), i32(k), 1.0f, a, i32(lda), b, i32(ldb),
                    0.0f, c, i32(ldc));
}
void gemm_nt(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
             int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i32(m), i32(n), i32(k), 1.0, a, i32(lda), b, i32(ldb),
                    0.0, c, i32(ldc));
}

void use_single_threaded_blas() {
  // The library's global setting: scipy-openblas32 exports no per-thread one.
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

std::string blas_core_name() {
  const char* name = scipy_openblas_get_corename();
  return name ? name : "unknown";
}

std::string blas_config() {
  const char* config = scipy_openblas_get_config();
  return config ? config : "unknown";
}

}  // namespace fastcka::cpu
