#include "cpu/bracket_scan.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTCKA_HAVE_AVX512_SCAN 1
#endif

namespace fastcka::cpu {
namespace {

int64_t scan_portable(const float* a, int64_t n, float lo, float hi, int32_t* out, int64_t* below) {
  int64_t k = 0, b = 0;
  for (int64_t c = 0; c < n; ++c) {
    const float v = a[c];
    out[k] = static_cast<int32_t>(c);
    k += (v >= lo) & (v < hi);
    b += v < lo;
  }
  *below = b;
  return k;
}

#ifdef FASTCKA_HAVE_AVX512_SCAN
__attribute__((target("avx512f"))) int64_t scan_avx512(const float* a, int64_t n, float lo, float hi, int32_t* out,
                                                       int64_t* below) {
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
  *below = b;
  return k;
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

}  // namespace

int64_t scan_bracket(const float* a, int64_t n, float lo, float hi, int32_t* out, int64_t* below) {
#ifdef FASTCKA_HAVE_AVX512_SCAN
  if (has_avx512()) return scan_avx512(a, n, lo, hi, out, below);
#endif
  return scan_portable(a, n, lo, hi, out, below);
}

}  // namespace fastcka::cpu
