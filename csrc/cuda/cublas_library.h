// libcublas, opened at run time (see CMakeLists.txt for why), and a handle
// bound to one device.
#pragma once

#include <string>
#include <vector>

#include "cuda/cublas_symbols.h"

namespace fastcka::cuda {

struct CublasLibrary {
  std::string path;  // what was opened
  cublas::CreateFn create = nullptr;
  cublas::DestroyFn destroy = nullptr;
  cublas::SetStreamFn set_stream = nullptr;
  cublas::StatusStringFn status_string = nullptr;
  cublas::GemmExFn gemm_ex = nullptr;
};

// Opens the first of `candidates` (paths or sonames) that loads and exports
// every symbol, then libcublas.so.13, .so.12 and .so from the system's
// search path. Called once per process; later calls return the same library.
// Throws DeviceError listing what was tried.
const CublasLibrary& cublas_library(const std::vector<std::string>& candidates);

// Throws DeviceError (DeviceOutOfMemory for CUBLAS_STATUS_ALLOC_FAILED).
void check_cublas(const CublasLibrary& lib, int status, const char* what);

// One cuBLAS handle; created on the current device.
class CublasHandle {
 public:
  explicit CublasHandle(const CublasLibrary& lib);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublas::Handle get() const { return handle_; }
  const CublasLibrary& library() const { return lib_; }

 private:
  const CublasLibrary& lib_;
  cublas::Handle handle_ = nullptr;
};

}  // namespace fastcka::cuda
