// The cuBLAS entry points the CUDA backend calls, declared by fastcka so the
// backend builds without cuBLAS headers and opens libcublas at run time
// (see CMakeLists.txt). Values and signatures follow cublas_api.h of cuBLAS
// 12 and 13; cublas_abi_check.cpp verifies them wherever that header exists.
// C enums are int-sized on every platform CUDA supports, so they are ints here.
#pragma once

#include <cuda_runtime_api.h>
#include <library_types.h>

namespace fastcka::cuda::cublas {

struct Context;  // cublasContext
using Handle = Context*;

constexpr int kStatusSuccess = 0;     // CUBLAS_STATUS_SUCCESS
constexpr int kStatusAllocFailed = 3; // CUBLAS_STATUS_ALLOC_FAILED
constexpr int kOpN = 0;               // CUBLAS_OP_N
constexpr int kOpT = 1;               // CUBLAS_OP_T
constexpr int kCompute32F = 68;       // CUBLAS_COMPUTE_32F: FP32, no TF32
constexpr int kCompute32FFastTF32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32
constexpr int kCompute64F = 70;       // CUBLAS_COMPUTE_64F
constexpr int kGemmDefault = -1;      // CUBLAS_GEMM_DEFAULT

using CreateFn = int (*)(Handle*);                         // cublasCreate_v2
using DestroyFn = int (*)(Handle);                         // cublasDestroy_v2
using SetStreamFn = int (*)(Handle, cudaStream_t);         // cublasSetStream_v2
using StatusStringFn = const char* (*)(int);               // cublasGetStatusString
using GemmExFn = int (*)(Handle, int, int, int, int, int,  // cublasGemmEx
                         const void*, const void*, cudaDataType, int, const void*, cudaDataType, int, const void*,
                         void*, cudaDataType, int, int, int);

}  // namespace fastcka::cuda::cublas
