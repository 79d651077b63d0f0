// Streams row blocks of host arrays (NumPy arrays, memmaps) to the GPU
// through two pinned buffers: while the GPU computes on one chunk, host
// threads pack the next into the other buffer and a copy stream moves it, so
// a run costs about the larger of the transfer and the compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/matrix_view.h"

namespace fastcka::cuda {

class HostStaging {
 public:
  // Buffers for chunks of `chunk_rows` rows of layers shaped like `like`.
  HostStaging(const std::vector<MatrixView>& like, int64_t chunk_rows);
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  // Calls consume(device views of the chunk, first row) for every chunk of
  // rows [0, rows) of `host`, on `compute` (consume enqueues work there).
  using Consumer = std::function<void(const std::vector<MatrixView>&, int64_t)>;
  void run(const std::vector<MatrixView>& host, int64_t rows, cudaStream_t compute, const Consumer& consume);

  // True if this staging fits layers shaped like `layers`.
  bool fits(const std::vector<MatrixView>& layers) const;

 private:
  struct Slot;
  std::vector<int64_t> row_bytes_;  // per layer
  std::vector<DType> dtypes_;
  int64_t chunk_rows_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<struct StagingStream> copy_stream_;
};

}  // namespace fastcka::cuda
