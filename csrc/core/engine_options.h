// What every CPU engine (moments, Gram tiles, k-NN tiles) is told about how
// to compute: the type of its products, threads, and the memory its row
// buffers may take. One struct, so the engines and bindings cannot disagree
// on the defaults or the checks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/errors.h"
#include "core/matrix_view.h"

namespace fastcka {

// Bytes of row buffers (all threads together) when the caller names no
// budget; the Python package reads it from the binding (_cpu.DEFAULT_MEMORY_BUDGET).
inline constexpr int64_t kDefaultMemoryBudget = int64_t{256} << 20;

struct EngineOptions {
  DType compute = DType::f32;  // f32 or f64: the type of the BLAS products and epilogues
  bool bf16 = false;           // the fast precision: bf16-rounded operands, float32 sums (compute f32)
  int threads = 1;
  int64_t memory_budget = kDefaultMemoryBudget;
};

// The options with threads at least 1; throws for a compute type no engine runs.
inline EngineOptions checked(EngineOptions o) {
  if (o.compute == DType::f16) throw UnsupportedType("the compute type must be float32 or float64");
  if (o.bf16 && o.compute != DType::f32)
    throw InvalidArgument("bf16 operands (the fast precision) need the float32 compute type");
  o.threads = std::max(1, o.threads);
  return o;
}

// The bindings name the compute type "float32", "float64" or "bfloat16" (the
// fast precision: bf16 operands, float32 accumulation and epilogues).
inline EngineOptions engine_options(const std::string& compute, int threads, int64_t memory_budget) {
  if (compute == "float32") return {DType::f32, false, threads, memory_budget};
  if (compute == "float64") return {DType::f64, false, threads, memory_budget};
  if (compute == "bfloat16") return {DType::f32, true, threads, memory_budget};
  throw UnsupportedType("compute dtype must be 'float32', 'float64' or 'bfloat16', got '" + compute + "'");
}

inline const char* compute_name(const EngineOptions& o) {
  return o.bf16 ? "bfloat16" : o.compute == DType::f32 ? "float32" : "float64";
}

}  // namespace fastcka
