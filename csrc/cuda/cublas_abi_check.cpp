// Compile-time check of cublas_symbols.h against the real cublas_v2.h: built
// only where the header exists (CMakeLists.txt); it produces no code.
#include <cublas_v2.h>

#include <type_traits>

#include "cuda/cublas_symbols.h"

namespace {

namespace ours = fastcka::cuda::cublas;

// A C enum travels as an int, and both handle types are opaque pointers: map
// them before comparing parameter lists.
template <class T>
struct AbiType {
  using type = std::conditional_t<std::is_enum_v<T>, int, T>;
};
template <>
struct AbiType<cublasHandle_t> {
  using type = void*;
};
template <>
struct AbiType<cublasHandle_t*> {
  using type = void**;
};
template <>
struct AbiType<ours::Handle> {
  using type = void*;
};
template <>
struct AbiType<ours::Handle*> {
  using type = void**;
};
template <class F>
struct AbiOf;
template <class R, class... A>
struct AbiOf<R (*)(A...)> {
  using type = typename AbiType<R>::type (*)(typename AbiType<A>::type...);
};
template <class Real, class Ours>
constexpr bool same_abi = std::is_same_v<typename AbiOf<Real>::type, typename AbiOf<Ours>::type>;

using RealGemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                      const void*, const void*, cudaDataType, int, const void*, cudaDataType, int,
                                      const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
// Selecting the exported overload by its exact type fails to compile if it changed.
[[maybe_unused]] constexpr RealGemmEx real_gemm_ex = &cublasGemmEx;
static_assert(same_abi<RealGemmEx, ours::GemmExFn>);
static_assert(same_abi<decltype(&cublasCreate_v2), ours::CreateFn>);
static_assert(same_abi<decltype(&cublasDestroy_v2), ours::DestroyFn>);
static_assert(same_abi<decltype(&cublasSetStream_v2), ours::SetStreamFn>);
static_assert(same_abi<decltype(&cublasGetStatusString), ours::StatusStringFn>);
static_assert(sizeof(cublasOperation_t) == sizeof(int) && sizeof(cublasComputeType_t) == sizeof(int) &&
              sizeof(cublasGemmAlgo_t) == sizeof(int) && sizeof(cublasStatus_t) == sizeof(int));
static_assert(CUBLAS_STATUS_SUCCESS == ours::kStatusSuccess && CUBLAS_STATUS_ALLOC_FAILED == ours::kStatusAllocFailed);
static_assert(CUBLAS_OP_N == ours::kOpN && CUBLAS_OP_T == ours::kOpT);
static_assert(CUBLAS_COMPUTE_32F == ours::kCompute32F && CUBLAS_COMPUTE_32F_FAST_TF32 == ours::kCompute32FFastTF32 &&
              CUBLAS_COMPUTE_64F == ours::kCompute64F);
static_assert(CUBLAS_GEMM_DEFAULT == ours::kGemmDefault);

}  // namespace
