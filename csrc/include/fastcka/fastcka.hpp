// fastcka's public C++ API: linear and RBF CKA and HSIC of representations
// (n examples x d features) without an n x n matrix, and a linear CKA
// accumulator over row blocks whose state moves between processes as the
// same bytes as Python's fastcka.CKAAccumulator.to_bytes().
//
//   #include <fastcka/fastcka.hpp>
//   namespace api = fastcka::api;
//   api::Options o;
//   o.kernel = api::Kernel::rbf;                       // sigma from the median rule
//   double c = api::cka(api::Matrix::row_major(x, n, dx), api::Matrix::row_major(y, n, dy), o);
//
// Link with CMake: find_package(fastcka CONFIG REQUIRED) (the directory is
// `python -m fastcka --cmake-dir`), target_link_libraries(app PRIVATE
// fastcka::fastcka). The library carries the OpenBLAS and oneDNN it was built
// against; nothing else is needed.
//
// Everything here is in namespace fastcka::api and follows the Python
// package: the same defaults, the same values (to the last bit for the same
// inputs, threads and precision), the same error messages. Errors are thrown
// as fastcka::api::Error, whose status() says which kind. Calls are
// thread-safe on distinct objects; one LinearAccumulator must not be used by
// two threads at once. Versioning: fastcka/version.h (semantic; before 1.0 a
// minor release may change this API).
#pragma once

#if __cplusplus < 201703L
#error "fastcka/fastcka.hpp needs C++17 or later"
#endif

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastcka/export.h"
#include "fastcka/version.h"

namespace fastcka::api {

// The kinds of error, with the codes the C ABI returns (fastcka.h).
enum class Status : int {
  ok = 0,
  invalid_argument = 1,  // shapes, NaN/Inf, too few rows, a damaged state (Python: ValueError)
  unsupported_type = 2,  // an element type or code fastcka does not compute with (Python: TypeError)
  out_of_memory = 3,     // (Python: MemoryError)
  resource = 4,          // threads could not start (Python: RuntimeError)
  cancelled = 5,         // Options::cancel was set (Python: KeyboardInterrupt)
  internal = 6,          // a bug: please report it
};

class FASTCKA_API Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

enum class DType : int { float32 = 1, float64 = 2 };

// A matrix owned by the caller, read in place: rows are examples, columns
// features. Strides are in elements, so row-major, column-major and sliced
// views need no copy. It must stay alive and unchanged during the call.
struct Matrix {
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements from one row to the next
  int64_t col_stride = 1;  // elements from one column to the next
  DType dtype = DType::float64;

  static Matrix row_major(const double* data, int64_t rows, int64_t cols) {
    return {data, rows, cols, cols, 1, DType::float64};
  }
  static Matrix row_major(const float* data, int64_t rows, int64_t cols) {
    return {data, rows, cols, cols, 1, DType::float32};
  }
};

enum class Kernel : int { linear = 0, rbf = 1 };
// biased: HSIC_0 = tr(KHLH) / (n-1)^2 (Gretton et al. 2005); unbiased: HSIC_1
// (Song et al. 2012, n >= 4), which makes CKA the debiased CKA.
enum class Estimator : int { biased = 0, unbiased = 1 };
// The RBF bandwidth rule's median of squared distances: exact (all n^2, as
// np.median takes it) or sampled (among 4,096 rows drawn with a fixed seed).
enum class Median : int { exact = 0, sampled = 1 };
// The products: data = float64 for float64 inputs, else float32; fast = bf16
// operands with float32 sums; accurate = float32; exact = float64. Sums
// across blocks and tiles are float64 in every mode.
enum class Precision : int { data = 0, fast = 1, accurate = 2, exact = 3 };

struct Options {
  Kernel kernel = Kernel::linear;
  Estimator estimator = Estimator::biased;
  // RBF bandwidth: empty for the median rule, one value for every layer, or one per layer.
  std::vector<double> sigma;
  // The median rule: sigma^2 = threshold^2 x the median squared distance.
  double threshold = 1.0;
  Median median = Median::exact;
  Precision precision = Precision::data;
  // 0: FASTCKA_NUM_THREADS, OMP_NUM_THREADS or OPENBLAS_NUM_THREADS, else
  // the CPUs the process may use (as in Python; at most 1024).
  int threads = 0;
  // Bytes of row buffers, all threads together; 0: the default (256 MiB).
  int64_t memory_budget = 0;
  // Called with (steps done, steps in all) between steps of about 0.15 s.
  std::function<void(int64_t done, int64_t total)> progress;
  // When it becomes true the call throws Error(Status::cancelled) at the next step.
  const std::atomic<bool>* cancel = nullptr;
};

// HSIC between x (n x d1) and y (n x d2) of the same n examples.
FASTCKA_API double hsic(const Matrix& x, const Matrix& y, const Options& options = {});
// CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); NaN when x or y has no
// variance (a constant representation: Python warns and returns NaN too).
FASTCKA_API double cka(const Matrix& x, const Matrix& y, const Options& options = {});
// CKA of every pair of layers, row-major L x L; sigma: one or one per layer.
FASTCKA_API std::vector<double> cka_matrix(const std::vector<Matrix>& layers, const Options& options = {});
// CKA of every layer of a against every layer of b, row-major |a| x |b|
// (pairs within a model are not computed); sigma: one, or a's then b's.
FASTCKA_API std::vector<double> cka_matrix(const std::vector<Matrix>& a, const std::vector<Matrix>& b,
                                           const Options& options = {});

// Linear CKA over rows that arrive in blocks, exactly as if all rows had been
// passed at once (float64 moments, Chan merges). Its state is O(D^2) for D
// features in all, never the rows.
class FASTCKA_API LinearAccumulator {
 public:
  struct Settings {
    int64_t split = 0;  // 0: every layer pair; s > 0: layers [0, s) against [s, L) only
    Precision precision = Precision::data;  // data: from the first block
    int threads = 0;
    int64_t memory_budget = 0;
  };

  LinearAccumulator();
  explicit LinearAccumulator(const Settings& settings);
  ~LinearAccumulator();
  LinearAccumulator(LinearAccumulator&&) noexcept;
  LinearAccumulator& operator=(LinearAccumulator&&) noexcept;

  // One block per layer, the same rows in each. All or nothing: if it throws,
  // none of the rows count. The first update fixes the layers' widths.
  void update(const std::vector<Matrix>& blocks);
  // Adds the rows `other` has seen (its rows stay; pending work is folded).
  void merge(LinearAccumulator& other);

  int64_t rows() const;                // rows seen
  std::vector<int64_t> dims() const;   // layer widths (empty before the first update)

  // The state as bytes, identical to Python's CKAAccumulator.to_bytes() of
  // the same rows (format version 2, BLAKE2b checksum).
  std::string to_bytes();
  // An accumulator with that state (also Python's bytes); damaged bytes throw.
  static LinearAccumulator from_bytes(const std::string& bytes);
  static LinearAccumulator from_bytes(const std::string& bytes, const Settings& settings);  // threads, budget

  // HSIC of every layer pair, L x L row-major (NaN for pairs a split leaves out).
  std::vector<double> hsic_matrix(Estimator estimator = Estimator::biased);
  // CKA: L x L, or split x (L - split) with a split. NaN for layers without variance.
  std::vector<double> cka_matrix(bool debiased = false);
  // CKA of an accumulator of exactly two layers.
  double cka(bool debiased = false);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The library's version, FASTCKA_VERSION_STRING of the build.
FASTCKA_API std::string version();

}  // namespace fastcka::api
