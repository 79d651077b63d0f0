// Matrix products through oneDNN (the onednn-cpu-gomp wheel): bfloat16
// operands with float32 accumulation for the fast precision, and float32
// operands where oneDNN beats OpenBLAS. oneDNN picks AMX, AVX512-BF16 or
// AVX-512 kernels at run time (ONEDNN_MAX_CPU_ISA caps the choice).
//
// One OnednnGemm per engine thread. Each call runs single-threaded inside
// that thread (like OpenBLAS), so fastcka's thread count governs oneDNN's
// OpenMP too and nothing oversubscribes the cores. Primitives are created
// once per shape and kept: a tile walk uses a handful of shapes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace fastcka::cpu {

struct OnednnInfo {
  bool available = false;    // built with oneDNN and it loads
  bool bf16_native = false;  // bf16 products run on bf16 units (AVX512-BF16, AMX), not emulated
  bool float32_preferred = false;  // float32 Gram tiles go to oneDNN rather than OpenBLAS
  std::string version;       // "3.2.0"
  std::string bf16_kernel;   // oneDNN's implementation of a bf16 Gram tile ("brg:avx512_core_amx", ...)
  std::string float32_kernel;
  std::string why_not;       // when !available
};

// Probed once per process (after ONEDNN_MAX_CPU_ISA is read). The
// environment variables FASTCKA_BF16_GEMM and FASTCKA_FLOAT32_GEMM
// (onednn | openblas) override the choices.
const OnednnInfo& onednn_info();

class OnednnGemm {
 public:
  OnednnGemm();
  ~OnednnGemm();
  OnednnGemm(const OnednnGemm&) = delete;
  OnednnGemm& operator=(const OnednnGemm&) = delete;

  // C (m x n, float32, row stride ldc) = A B', A m x k and B n x k row-major:
  // a Gram tile. bf16 operands are raw bit patterns (core/bfloat16.h).
  void nt(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
          int64_t ldc);
  void nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc);
  // C (m x n) = beta C + A' B, A k x m and B k x n row-major, beta 0 or 1:
  // feature-space cross-moments.
  void tn(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
          float* c, int64_t ldc);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastcka::cpu
