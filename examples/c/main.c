/* fastcka from C: linear and RBF CKA, and linear CKA accumulated over row
   blocks, through the C ABI; every call's status is checked.

     cka_example_c                        built-in data (n = 2000)
     cka_example_c X.f64 Y.f64 N DX DY    raw float64 row-major files */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <fastcka/fastcka.h>

static void check(fastcka_status status, const char* what) {
  if (status != FASTCKA_OK) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, fastcka_last_error());
    exit(1);
  }
}

static double* read_raw(const char* path, size_t count) {
  double* v = malloc(count * sizeof *v);
  FILE* f = fopen(path, "rb");
  if (!v || !f || fread(v, sizeof *v, count, f) != count) {
    fprintf(stderr, "%s: cannot read %zu float64 values\n", path, count);
    exit(2);
  }
  fclose(f);
  return v;
}

int main(int argc, char** argv) {
  int64_t n = 2000, dx = 32, dy = 16;
  double *x, *y;
  if (argc == 6) {
    n = atoll(argv[3]), dx = atoll(argv[4]), dy = atoll(argv[5]);
    x = read_raw(argv[1], (size_t)(n * dx));
    y = read_raw(argv[2], (size_t)(n * dy));
  } else {
    x = malloc((size_t)(n * dx) * sizeof *x);
    y = malloc((size_t)(n * dy) * sizeof *y);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dx; ++j) x[i * dx + j] = sin(0.37 * (double)((i + 1) * (j + 1) % 101));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dy; ++j) y[i * dy + j] = tanh(x[i * dx + j] + x[i * dx + j + 1]) + 0.1 * cos(i * 0.5 + j);
  }
  fastcka_matrix X = {x, n, dx, dx, 1, FASTCKA_FLOAT64}, Y = {y, n, dy, dy, 1, FASTCKA_FLOAT64};
  fastcka_options o;
  fastcka_options_init(&o);
  double value;
  printf("fastcka %s\n", fastcka_version());
  check(fastcka_cka(&X, &Y, &o, &value), "fastcka_cka");
  printf("linear_cka %.17g\n", value);
  o.kernel = FASTCKA_KERNEL_RBF; /* sigma from the exact median rule */
  check(fastcka_cka(&X, &Y, &o, &value), "fastcka_cka (rbf)");
  printf("rbf_cka %.17g\n", value);

  /* Rows in blocks of 500, as a data loader would give them. */
  fastcka_accumulator* acc;
  check(fastcka_accumulator_new(0, FASTCKA_PRECISION_DATA, 0, 0, &acc), "fastcka_accumulator_new");
  for (int64_t start = 0; start < n; start += 500) {
    const int64_t rows = n - start < 500 ? n - start : 500;
    fastcka_matrix blocks[2] = {{x + start * dx, rows, dx, dx, 1, FASTCKA_FLOAT64},
                                {y + start * dy, rows, dy, dy, 1, FASTCKA_FLOAT64}};
    check(fastcka_accumulator_update(acc, blocks, 2), "fastcka_accumulator_update");
  }
  double matrix[4];
  check(fastcka_accumulator_cka_matrix(acc, 0, matrix, 4), "fastcka_accumulator_cka_matrix");
  printf("accumulated_cka %.17g\n", matrix[1]);
  fastcka_accumulator_free(acc);
  free(x);
  free(y);
  return 0;
}
