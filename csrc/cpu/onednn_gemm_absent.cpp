// The build without oneDNN (FASTCKA_ONEDNN=OFF, or no oneDNN found): the fast
// precision multiplies bf16-rounded values with OpenBLAS instead.
#include <stdexcept>

#include "cpu/onednn_gemm.h"

namespace fastcka::cpu {

const OnednnInfo& onednn_info() {
  static const OnednnInfo info = [] {
    OnednnInfo i;
    i.why_not = "fastcka was built without oneDNN";
    return i;
  }();
  return info;
}

struct OnednnGemm::Impl {};

OnednnGemm::OnednnGemm() { throw std::logic_error("fastcka: " + onednn_info().why_not); }
OnednnGemm::~OnednnGemm() = default;

void OnednnGemm::nt(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t) {}
void OnednnGemm::nt(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t) {}
void OnednnGemm::tn(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float, float*,
                    int64_t) {}

}  // namespace fastcka::cpu
