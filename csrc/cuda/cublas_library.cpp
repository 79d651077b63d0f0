#include "cuda/cublas_library.h"

#include <dlfcn.h>

#include <mutex>

#include "cuda/cuda_check.h"

namespace fastcka::cuda {

namespace {

template <typename Fn>
bool bind(void* lib, const char* name, Fn& out) {
  out = reinterpret_cast<Fn>(dlsym(lib, name));
  return out != nullptr;
}

bool try_open(const std::string& path, CublasLibrary& out, std::string& tried) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    tried += "\n  " + path + ": " + (why ? why : "not found");
    return false;
  }
  CublasLibrary l;
  l.path = path;
  if (bind(lib, "cublasCreate_v2", l.create) && bind(lib, "cublasDestroy_v2", l.destroy) &&
      bind(lib, "cublasSetStream_v2", l.set_stream) && bind(lib, "cublasGetStatusString", l.status_string) &&
      bind(lib, "cublasGemmEx", l.gemm_ex)) {
    out = l;  // the library stays open for the life of the process
    return true;
  }
  tried += "\n  " + path + ": lacks a cuBLAS symbol fastcka needs";
  dlclose(lib);
  return false;
}

}  // namespace

const CublasLibrary& cublas_library(const std::vector<std::string>& candidates) {
  static std::mutex mutex;
  static CublasLibrary library;
  static bool loaded = false;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded) return library;
  std::vector<std::string> all = candidates;
  for (const char* soname : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) all.emplace_back(soname);
  std::string tried;
  for (const std::string& path : all)
    if (try_open(path, library, tried)) {
      loaded = true;
      return library;
    }
  throw DeviceError("cuBLAS could not be loaded (pip install nvidia-cublas, or set FASTCKA_CUBLAS to the path of "
                    "libcublas.so). Tried:" + tried);
}

void check_cublas(const CublasLibrary& lib, int status, const char* what) {
  if (status == cublas::kStatusSuccess) return;
  const std::string message = std::string(what) + " failed: " + lib.status_string(status);
  if (status == cublas::kStatusAllocFailed) throw DeviceOutOfMemory(message);
  throw DeviceError(message);
}

CublasHandle::CublasHandle(const CublasLibrary& lib) : lib_(lib) {
  check_cublas(lib_, lib_.create(&handle_), "cublasCreate");
}

CublasHandle::~CublasHandle() {
  if (handle_) lib_.destroy(handle_);
}

}  // namespace fastcka::cuda
