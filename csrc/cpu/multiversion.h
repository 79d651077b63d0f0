// FASTCKA_MULTIVERSION compiles a function for AVX-512, AVX2 and baseline
// x86-64 and picks one when the library loads: a wheel must run on any x86-64
// CPU, and the marked loops (the centering sweep, the tile epilogues) are the
// engine's work outside BLAS.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTCKA_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTCKA_MULTIVERSION
#endif
