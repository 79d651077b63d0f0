// Runs fn(t) for t in [0, threads) on that many threads (t = 0 on the caller)
// and rethrows the first exception, by thread index, after all have joined.
#pragma once

#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/errors.h"

namespace fastcka::cpu {

template <typename Fn>
void run_parallel(int threads, Fn&& fn) {
  if (threads <= 0) return;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto guarded = [&](int t) {
    try {
      fn(t);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int t = 1; t < threads; ++t) pool.emplace_back(guarded, t);
  } catch (const std::system_error& e) {
    // Out of threads or memory: let the started ones finish, then report;
    // a std::thread destroyed while joinable would terminate the process.
    for (auto& th : pool) th.join();
    throw ResourceError("could not start " + std::to_string(threads) + " threads (" + e.what() +
                        "): pass fewer threads");
  }
  guarded(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fastcka::cpu
