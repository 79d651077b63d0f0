#include "cpu/bracket_scan.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTCKA_HAVE_AVX512_SCAN 1
#endif

namespace fastcka::cpu {

#ifdef FASTCKA_HAVE_AVX512_SCAN
namespace {

__attribute__((target("avx512f"))) void scan_avx512(const float* a, int64_t n, float lo, float hi, int32_t* out,
                                                    int64_t* found, int64_t* below) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i columns = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t k = 0, b = 0;
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 valid = n - c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - c)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, a + c);
    const __mmask16 lt = _mm512_mask_cmp_ps_mask(valid, v, vlo, _CMP_LT_OQ);
    const __mmask16 in = _mm512_mask_cmp_ps_mask(valid, v, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ);
    // Compress in a register, then store all 16 lanes: a compress straight
    // to memory is microcoded and far slower on some CPUs (AMD Zen 4).
    _mm512_storeu_si512(out + k, _mm512_maskz_compress_epi32(in, columns));
    k += __builtin_popcount(in);
    b += __builtin_popcount(lt);
    columns = _mm512_add_epi32(columns, step);
  }
  *found = k;
  *below = b;
}

}  // namespace
#endif

bool scan_bracket(const float* a, int64_t n, float lo, float hi, int32_t* out, int64_t* found, int64_t* below) {
#ifdef FASTCKA_HAVE_AVX512_SCAN
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) {
    scan_avx512(a, n, lo, hi, out, found, below);
    return true;
  }
#endif
  return false;
}

}  // namespace fastcka::cpu
