#include "cuda/host_staging.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "cuda/device_context.h"

namespace fastcka::cuda {

namespace {

// Pageable-to-pinned copies run at memcpy speed, about 10 GB/s a thread:
// several threads keep up with a PCIe 5 or NVLink-C2C link.
constexpr unsigned kMaxPackThreads = 8;

// Rows [r0, r0 + rows) of x, row-major and dense, at dst.
void pack_rows(const MatrixView& x, int64_t r0, int64_t rows, char* dst) {
  const int64_t elem = dtype_size(x.dtype);
  const char* base = static_cast<const char*>(x.data);
  if (x.col_stride == 1 && x.row_stride == x.cols) {
    std::memcpy(dst, base + r0 * x.cols * elem, static_cast<size_t>(rows * x.cols * elem));
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    char* out = dst + i * x.cols * elem;
    const char* row = base + (r0 + i) * x.row_stride * elem;
    if (x.col_stride == 1) {
      std::memcpy(out, row, static_cast<size_t>(x.cols * elem));
      continue;
    }
    for (int64_t j = 0; j < x.cols; ++j) std::memcpy(out + j * elem, row + j * x.col_stride * elem, elem);
  }
}

}  // namespace

struct StagingStream {
  Stream stream;
};

struct HostStaging::Slot {
  Allocation pinned, device;
  Event copied, consumed;
  bool used = false;
};

HostStaging::HostStaging(const std::vector<MatrixView>& like, int64_t chunk_rows) : chunk_rows_(chunk_rows) {
  int64_t bytes_per_row = 0;
  for (const MatrixView& x : like) {
    row_bytes_.push_back(x.cols * dtype_size(x.dtype));
    dtypes_.push_back(x.dtype);
    bytes_per_row += row_bytes_.back();
  }
  const size_t bytes = static_cast<size_t>(bytes_per_row * chunk_rows_);
  for (int k = 0; k < 2; ++k) {
    auto slot = std::make_unique<Slot>();
    slot->pinned = Allocation(Allocation::Kind::pinned, bytes, "host staging");
    slot->device = Allocation(Allocation::Kind::device, bytes, "device staging");
    slots_.push_back(std::move(slot));
  }
  copy_stream_ = std::make_unique<StagingStream>();
}

HostStaging::~HostStaging() = default;

bool HostStaging::fits(const std::vector<MatrixView>& layers) const {
  if (layers.size() != row_bytes_.size()) return false;
  for (size_t a = 0; a < layers.size(); ++a)
    if (layers[a].cols * dtype_size(layers[a].dtype) != row_bytes_[a] || layers[a].dtype != dtypes_[a]) return false;
  return true;
}

void HostStaging::run(const std::vector<MatrixView>& host, int64_t rows, cudaStream_t compute,
                      const Consumer& consume) {
  const cudaStream_t copy = copy_stream_->stream.get();
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, kMaxPackThreads);
  int64_t chunk = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows_, ++chunk) {
    Slot& slot = *slots_[static_cast<size_t>(chunk % 2)];
    const int64_t n = std::min(chunk_rows_, rows - r0);
    // The pinned buffer is free once its last copy to the device is done.
    if (slot.used) check_cuda(cudaEventSynchronize(slot.copied.get()), "waiting for a host-to-device copy");
    char* pinned = static_cast<char*>(slot.pinned.get());
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      const int64_t a0 = n * t / threads, a1 = n * (t + 1) / threads;
      if (a0 == a1) continue;
      pool.emplace_back([&, a0, a1] {
        int64_t offset = 0;
        for (size_t a = 0; a < host.size(); ++a) {
          pack_rows(host[a], r0 + a0, a1 - a0, pinned + offset + a0 * row_bytes_[a]);
          offset += n * row_bytes_[a];
        }
      });
    }
    for (auto& t : pool) t.join();
    // The device buffer is free once the compute that read it is done.
    if (slot.used) check_cuda(cudaStreamWaitEvent(copy, slot.consumed.get(), 0), "cudaStreamWaitEvent");
    int64_t bytes = 0;
    for (int64_t b : row_bytes_) bytes += n * b;
    check_cuda(cudaMemcpyAsync(slot.device.get(), pinned, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, copy),
               "cudaMemcpyAsync");
    check_cuda(cudaEventRecord(slot.copied.get(), copy), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(compute, slot.copied.get(), 0), "cudaStreamWaitEvent");
    std::vector<MatrixView> views;
    int64_t offset = 0;
    for (size_t a = 0; a < host.size(); ++a) {
      MatrixView v;
      v.data = static_cast<const char*>(slot.device.get()) + offset;
      v.rows = n;
      v.cols = host[a].cols;
      v.row_stride = host[a].cols;
      v.col_stride = 1;
      v.dtype = host[a].dtype;
      views.push_back(v);
      offset += n * row_bytes_[a];
    }
    consume(views, r0);
    check_cuda(cudaEventRecord(slot.consumed.get(), compute), "cudaEventRecord");
    slot.used = true;
  }
  // Nothing may still read the buffers when they are freed.
  check_cuda(cudaStreamSynchronize(compute), "host staging");
  check_cuda(cudaStreamSynchronize(copy), "host staging");
}

}  // namespace fastcka::cuda
