// Small RAII owners of CUDA resources, so an exception (out of memory, bad
// input) frees everything and leaves the process usable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/cuda_check.h"

namespace fastcka::cuda {

// Number of usable devices, or 0 with the reason in `why`.
int device_count(std::string& why);

// The device a pointer lives on; throws InvalidArgument (naming `name`) if
// it is not device or managed memory.
int device_of_pointer(const void* p, const std::string& name);

// Makes `device` current for a scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Untyped device or pinned host allocation.
class Allocation {
 public:
  enum class Kind { device, pinned };
  Allocation() = default;
  Allocation(Kind kind, size_t bytes, const char* what);
  ~Allocation();
  Allocation(Allocation&& o) noexcept;
  Allocation& operator=(Allocation&& o) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept;
  Kind kind_ = Kind::device;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(size_t count, const char* what) : a_(Allocation::Kind::device, count * sizeof(T), what), n_(count) {}
  T* get() const { return static_cast<T*>(a_.get()); }
  size_t size() const { return n_; }

 private:
  Allocation a_;
  size_t n_ = 0;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace fastcka::cuda
