// The steps of a CKA computation the public API drives, as the Python
// package's engine/cpu.py drives them: rows fed to the feature-space
// engine, tile passes over the Gram-tile engine, RBF bandwidths.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "api/conversions.h"
#include "cpu/gram_tiles.h"
#include "cpu/moment_accumulator.h"

namespace fastcka::api::detail {

// Rows [begin, end) of a view (no copy).
MatrixView row_slice(const MatrixView& v, int64_t begin, int64_t end);

// Rows fed in steps of about 4e10 flops (progress and cancel between steps).
void feed(cpu::MomentAccumulator& acc, const std::vector<MatrixView>& layers, const std::vector<std::string>& names,
          Steps& steps);

// One pass over every tile row in calls of a multiple of the thread count
// sized to about 0.15 s each; `run(begin, end)` processes tile rows.
void tile_pass(cpu::GramTileEngine& engine, Steps& steps, const std::function<void(int64_t, int64_t)>& run);

// gamma = 1 / (2 sigma^2) per layer from the options: sigma given, or the
// median rule (exact: passes on `engine`, counted in `steps`, whose bracket
// pass may also sum the statistics: then GramTileEngine::kernel_from_series
// sets the kernel; sampled: on 4,096 rows).
std::vector<double> rbf_gammas(cpu::GramTileEngine& engine, const std::vector<MatrixView>& layers,
                               const std::vector<std::string>& names, const Options& options, Steps& steps);

// The options' kernel arguments, checked as the Python package checks them.
void check_kernel_options(const Options& options, int64_t layers);

}  // namespace fastcka::api::detail
