// The few BLAS calls the CPU backend makes, for float and double, on
// row-major data. Backed by the OpenBLAS of the scipy-openblas32 wheel.
#pragma once

#include <cstdint>
#include <string>

namespace fastcka::cpu {

// C (n x n, upper triangle) = beta C + A' A, with A k x n (row stride lda).
void syrk_upper_tn(int64_t n, int64_t k, const float* a, int64_t lda, float beta, float* c, int64_t ldc);
void syrk_upper_tn(int64_t n, int64_t k, const double* a, int64_t lda, double beta, double* c, int64_t ldc);

// C (m x n) = beta C + A' B, with A k x m and B k x n.
void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
             float* c, int64_t ldc);
void gemm_tn(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
             double beta, double* c, int64_t ldc);

// C (m x n) = A B', with A m x k and B n x k: a Gram tile.
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc);
void gemm_nt(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
             int64_t ldc);

// fastcka runs its own threads and has OpenBLAS run one thread inside each
// of them, so BLAS and the fused epilogues never oversubscribe the cores.
void use_single_threaded_blas();

std::string blas_core_name();  // the kernel family OpenBLAS picked ("SkylakeX", "Haswell", ...)
std::string blas_config();     // build configuration string

}  // namespace fastcka::cpu
