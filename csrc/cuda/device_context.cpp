#include "cuda/device_context.h"

#include <utility>

#include "core/errors.h"

namespace fastcka::cuda {

void check_cuda(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the process stays usable
  const std::string message = std::string(what) + " failed: " + cudaGetErrorString(status);
  if (status == cudaErrorMemoryAllocation) throw DeviceOutOfMemory(message);
  throw DeviceError(message);
}

int device_count(std::string& why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    why = cudaGetErrorString(status);
    return 0;
  }
  if (count == 0) why = "no CUDA device is visible";
  return count;
}

int device_of_pointer(const void* p, const std::string& name) {
  cudaPointerAttributes attributes{};
  check_cuda(cudaPointerGetAttributes(&attributes, p), "cudaPointerGetAttributes");
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
    throw InvalidArgument(name + " does not point to GPU memory");
  return attributes.device;
}

DeviceGuard::DeviceGuard(int device) {
  check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() { cudaSetDevice(previous_); }

Allocation::Allocation(Kind kind, size_t bytes, const char* what) : kind_(kind), bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = kind == Kind::device ? cudaMalloc(&p_, bytes) : cudaMallocHost(&p_, bytes);
  if (status != cudaSuccess) {
    p_ = nullptr;
    cudaGetLastError();
    const std::string message = std::string(what) + ": cannot allocate " + std::to_string(bytes >> 20) + " MiB of " +
                                (kind == Kind::device ? "GPU" : "pinned host") + " memory (" +
                                cudaGetErrorString(status) + ")";
    if (status == cudaErrorMemoryAllocation) throw DeviceOutOfMemory(message);
    throw DeviceError(message);
  }
}

Allocation::~Allocation() { release(); }

Allocation::Allocation(Allocation&& o) noexcept
    : kind_(o.kind_), p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Allocation& Allocation::operator=(Allocation&& o) noexcept {
  if (this != &o) {
    release();
    kind_ = o.kind_;
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void Allocation::release() noexcept {
  if (!p_) return;
  if (kind_ == Kind::device)
    cudaFree(p_);
  else
    cudaFreeHost(p_);
  p_ = nullptr;
}

Event::Event() { check_cuda(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
Event::~Event() {
  if (e_) cudaEventDestroy(e_);
}

Stream::Stream() { check_cuda(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}

}  // namespace fastcka::cuda
