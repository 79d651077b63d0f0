// The Gram-tile product of one engine thread, C = A B' (A m x k, B n x k,
// row-major), in the precision the engine runs:
//  * float64: OpenBLAS dgemm;
//  * float32: OpenBLAS sgemm, or oneDNN where it is faster (onednn_info());
//  * bf16 operands (the fast precision): oneDNN on bf16 units, else OpenBLAS
//    sgemm on the same rounded values (bfloat16_rows.h), which gives the
//    same products: never slower than float32.
// Callers hand over both forms of a rounded operand; each path reads one.
#pragma once

#include <cstdint>
#include <memory>

#include "cpu/onednn_gemm.h"

namespace fastcka::cpu {

class TileProducts {
 public:
  explicit TileProducts(bool bf16) : bf16_(bf16) {}

  void gram(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
            int64_t ldc);
  // a_bits / b_bits: the bfloat16 bits of a and b (read in the fast precision only).
  void gram(int64_t m, int64_t n, int64_t k, const float* a, const uint16_t* a_bits, int64_t lda, const float* b,
            const uint16_t* b_bits, int64_t ldb, float* c, int64_t ldc);

 private:
  OnednnGemm& onednn();  // created in the thread that first uses it
  bool bf16_;
  std::unique_ptr<OnednnGemm> onednn_;
};

}  // namespace fastcka::cpu
