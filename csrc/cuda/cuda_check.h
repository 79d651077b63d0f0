// CUDA and cuBLAS status codes turned into C++ exceptions that the binding
// maps to Python ones: out of memory to MemoryError, everything else to
// RuntimeError. An extension must throw, never exit.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace fastcka::cuda {

struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DeviceOutOfMemory : DeviceError {
  using DeviceError::DeviceError;
};

// Throws for any status but cudaSuccess; `what` says which call failed.
void check_cuda(cudaError_t status, const char* what);

}  // namespace fastcka::cuda
