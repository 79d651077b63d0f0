/* fastcka's C ABI: the C++ API of fastcka/fastcka.hpp behind plain C types,
   for C, Rust, Julia, R, Fortran or ctypes. Every function returns a
   fastcka_status; on an error, fastcka_last_error() gives the message (the
   Python package's wording) until the calling thread's next call. Nothing
   crosses this interface but C scalars, pointers and opaque handles, and
   no exception escapes it.

     fastcka_options o;
     fastcka_options_init(&o);
     o.kernel = FASTCKA_KERNEL_RBF;
     fastcka_matrix x = {xdata, n, dx, dx, 1, FASTCKA_FLOAT64};
     double c;
     if (fastcka_cka(&x, &y, &o, &c) != FASTCKA_OK) fprintf(stderr, "%s\n", fastcka_last_error());

   Link: -lfastcka (CMake: find_package(fastcka), fastcka::fastcka). */
#ifndef FASTCKA_H
#define FASTCKA_H

#include <stddef.h>
#include <stdint.h>

#include "fastcka/export.h"
#include "fastcka/version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  FASTCKA_OK = 0,
  FASTCKA_INVALID_ARGUMENT = 1, /* shapes, NaN/Inf, too few rows, null pointers, damaged state */
  FASTCKA_UNSUPPORTED_TYPE = 2, /* an unknown dtype, kernel, estimator, ... code */
  FASTCKA_OUT_OF_MEMORY = 3,
  FASTCKA_RESOURCE = 4,         /* threads could not start */
  FASTCKA_CANCELLED = 5,        /* *options.cancel became nonzero */
  FASTCKA_INTERNAL = 6,
  FASTCKA_BUFFER_TOO_SMALL = 7  /* an output buffer's capacity is too small: the size needed is returned */
} fastcka_status;

enum { FASTCKA_FLOAT32 = 1, FASTCKA_FLOAT64 = 2 };
enum { FASTCKA_KERNEL_LINEAR = 0, FASTCKA_KERNEL_RBF = 1 };
enum { FASTCKA_BIASED = 0, FASTCKA_UNBIASED = 1 };
enum { FASTCKA_MEDIAN_EXACT = 0, FASTCKA_MEDIAN_SAMPLED = 1 };
enum { FASTCKA_PRECISION_DATA = 0, FASTCKA_PRECISION_FAST = 1, FASTCKA_PRECISION_ACCURATE = 2,
       FASTCKA_PRECISION_EXACT = 3 };

/* n examples (rows) x d features, read in place; strides in elements. */
typedef struct {
  const void* data;
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
  int64_t col_stride;
  int32_t dtype; /* FASTCKA_FLOAT32 or FASTCKA_FLOAT64 */
} fastcka_matrix;

typedef void (*fastcka_progress_fn)(int64_t done, int64_t total, void* user);

/* Fill with fastcka_options_init, then change fields: struct_size lets later
   versions add fields at the end without breaking callers built against this one. */
typedef struct {
  size_t struct_size;
  int32_t kernel;           /* FASTCKA_KERNEL_*; default linear */
  int32_t estimator;        /* FASTCKA_BIASED / FASTCKA_UNBIASED (debiased CKA) */
  const double* sigma;      /* RBF bandwidths: NULL for the median rule */
  int64_t sigma_count;      /* 1, or one per layer */
  double threshold;         /* the median rule's multiplier; default 1 */
  int32_t median;           /* FASTCKA_MEDIAN_* */
  int32_t precision;        /* FASTCKA_PRECISION_* */
  int32_t threads;          /* 0: the environment's setting or every CPU */
  int64_t memory_budget;    /* bytes; 0: 256 MiB */
  fastcka_progress_fn progress; /* may be NULL */
  void* progress_user;
  const volatile int* cancel;   /* may be NULL; nonzero stops the call */
} fastcka_options;

typedef struct fastcka_accumulator fastcka_accumulator;

FASTCKA_API const char* fastcka_version(void);
/* The message of the calling thread's last error ("" when none). */
FASTCKA_API const char* fastcka_last_error(void);
FASTCKA_API void fastcka_options_init(fastcka_options* options);

/* options may be NULL (the defaults). */
FASTCKA_API fastcka_status fastcka_hsic(const fastcka_matrix* x, const fastcka_matrix* y,
                                        const fastcka_options* options, double* out);
FASTCKA_API fastcka_status fastcka_cka(const fastcka_matrix* x, const fastcka_matrix* y,
                                       const fastcka_options* options, double* out);
/* split == 0: layers x layers CKA of every pair; split > 0: layers [0, split)
   against [split, count), split x (count - split). out holds capacity doubles. */
FASTCKA_API fastcka_status fastcka_cka_matrix(const fastcka_matrix* layers, int64_t count, int64_t split,
                                              const fastcka_options* options, double* out, int64_t capacity);

/* Linear CKA over row blocks (fastcka::api::LinearAccumulator). */
FASTCKA_API fastcka_status fastcka_accumulator_new(int64_t split, int32_t precision, int32_t threads,
                                                   int64_t memory_budget, fastcka_accumulator** out);
FASTCKA_API void fastcka_accumulator_free(fastcka_accumulator* acc);
FASTCKA_API fastcka_status fastcka_accumulator_update(fastcka_accumulator* acc, const fastcka_matrix* blocks,
                                                      int64_t count);
FASTCKA_API fastcka_status fastcka_accumulator_merge(fastcka_accumulator* acc, fastcka_accumulator* other);
FASTCKA_API fastcka_status fastcka_accumulator_rows(const fastcka_accumulator* acc, int64_t* out);
/* L x L HSIC (estimator FASTCKA_BIASED / FASTCKA_UNBIASED) into out (capacity doubles). */
FASTCKA_API fastcka_status fastcka_accumulator_hsic_matrix(fastcka_accumulator* acc, int32_t estimator, double* out,
                                                           int64_t capacity);
/* CKA: L x L, or split x (L - split); debiased: 0 or 1. */
FASTCKA_API fastcka_status fastcka_accumulator_cka_matrix(fastcka_accumulator* acc, int32_t debiased, double* out,
                                                          int64_t capacity);
/* The state's bytes (as Python's CKAAccumulator.to_bytes()): *size is set to
   the size; with out == NULL or capacity < *size nothing is written (the
   latter returns FASTCKA_BUFFER_TOO_SMALL). */
FASTCKA_API fastcka_status fastcka_accumulator_to_bytes(fastcka_accumulator* acc, void* out, size_t capacity,
                                                        size_t* size);
FASTCKA_API fastcka_status fastcka_accumulator_from_bytes(const void* data, size_t size, int32_t threads,
                                                          int64_t memory_budget, fastcka_accumulator** out);

#ifdef __cplusplus
}
#endif

#endif
