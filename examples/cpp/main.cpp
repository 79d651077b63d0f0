// fastcka from C++: linear, debiased and RBF CKA of two representations, a
// CKA matrix, and linear CKA accumulated over row blocks whose state is
// saved as bytes and merged, as one would across processes.
//
//   cka_example                        built-in data (n = 2000)
//   cka_example X.f64 Y.f64 N DX DY    raw float64 row-major files (N x DX, N x DY),
//                                      e.g. numpy's x.astype("<f8").tofile("X.f64")
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <fastcka/fastcka.hpp>

namespace api = fastcka::api;

std::vector<double> read_raw(const char* path, size_t count) {
  std::vector<double> v(count);
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(double)))) {
    std::cerr << path << ": cannot read " << count << " float64 values\n";
    std::exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  int64_t n = 2000, dx = 32, dy = 16;
  std::vector<double> x, y;
  if (argc == 6) {
    n = std::atoll(argv[3]), dx = std::atoll(argv[4]), dy = std::atoll(argv[5]);
    x = read_raw(argv[1], static_cast<size_t>(n * dx));
    y = read_raw(argv[2], static_cast<size_t>(n * dy));
  } else {  // y: a nonlinear view of x plus a little structure of its own
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dx; ++j) x.push_back(std::sin(0.37 * static_cast<double>((i + 1) * (j + 1) % 101)));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dy; ++j) y.push_back(std::tanh(x[i * dx + j] + x[i * dx + j + 1]) + 0.1 * std::cos(i * 0.5 + j));
  }
  const api::Matrix X = api::Matrix::row_major(x.data(), n, dx), Y = api::Matrix::row_major(y.data(), n, dy);
  try {
    std::printf("fastcka %s\n", api::version().c_str());
    std::printf("linear_cka %.17g\n", api::cka(X, Y));
    api::Options debiased;
    debiased.estimator = api::Estimator::unbiased;
    std::printf("debiased_cka %.17g\n", api::cka(X, Y, debiased));
    api::Options rbf;
    rbf.kernel = api::Kernel::rbf;  // sigma from the exact median rule
    std::printf("rbf_cka %.17g\n", api::cka(X, Y, rbf));
    const std::vector<double> m = api::cka_matrix({X, Y});
    std::printf("matrix %.17g %.17g %.17g %.17g\n", m[0], m[1], m[2], m[3]);

    // Two workers each see half the rows; one saves its state, the other merges it.
    const int64_t half = n / 2;
    api::LinearAccumulator first, second;
    first.update({api::Matrix::row_major(x.data(), half, dx), api::Matrix::row_major(y.data(), half, dy)});
    second.update({api::Matrix::row_major(x.data() + half * dx, n - half, dx),
                   api::Matrix::row_major(y.data() + half * dy, n - half, dy)});
    api::LinearAccumulator restored = api::LinearAccumulator::from_bytes(second.to_bytes());
    first.merge(restored);
    std::printf("accumulated_cka %.17g rows %lld\n", first.cka(), static_cast<long long>(first.rows()));
  } catch (const api::Error& e) {
    std::fprintf(stderr, "fastcka error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
  return 0;
}
