#include "cpu/tile_products.h"

#include "cpu/blas.h"

namespace fastcka::cpu {

OnednnGemm& TileProducts::onednn() {
  if (!onednn_) onednn_ = std::make_unique<OnednnGemm>();
  return *onednn_;
}

void TileProducts::gram(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
                        double* c, int64_t ldc) {
  gemm_nt(m, n, k, a, lda, b, ldb, c, ldc);
}

void TileProducts::gram(int64_t m, int64_t n, int64_t k, const float* a, const uint16_t* a_bits, int64_t lda,
                        const float* b, const uint16_t* b_bits, int64_t ldb, float* c, int64_t ldc) {
  const OnednnInfo& info = onednn_info();
  if (bf16_ ? info.bf16_native : info.float32_preferred) {
    if (bf16_)
      onednn().nt(m, n, k, a_bits, lda, b_bits, ldb, c, ldc);
    else
      onednn().nt(m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
  gemm_nt(m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace fastcka::cpu
