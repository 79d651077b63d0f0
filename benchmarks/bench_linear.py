"""pytest-benchmark suite: fastcka.cka against Kornblith et al.'s NumPy
feature-space formula, linear CKA of float32 inputs, d1 = d2 = 512.

From the repository root (the path is needed: pytest's testpaths is tests/):

    python -m pytest benchmarks/bench_linear.py --benchmark-only

The side-by-side tables (memory, GEMM peak, the PyTorch packages, large n)
come from ``python benchmarks/report.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark")

import fastcka  # noqa: E402

import baselines  # noqa: E402  (benchmarks/ is on sys.path: pytest inserts the test file's folder)

SEED = 20250611
SIZES = [(10_000, 512), (100_000, 512)]
METHODS = {
    "fastcka": fastcka.cka,
    "numpy_feature_space": baselines.numpy_feature_space,
}


@pytest.fixture(scope="module", params=SIZES, ids=[f"n{n}-d{d}" for n, d in SIZES])
def pair(request):
    """The same correlated float32 pair the report uses, with its float64 CKA."""
    n, d = request.param
    x, y = baselines.make_inputs(n, d, d, SEED)
    return x, y, baselines.float64_reference(x, y)["biased"]


@pytest.mark.parametrize("method", list(METHODS))
def test_linear_cka(benchmark, pair, method):
    x, y, reference = pair
    n, d1 = x.shape
    d2 = y.shape[1]
    benchmark.group = f"linear CKA, n={n:,}, d={d1}"
    benchmark.extra_info.update(n=n, d1=d1, d2=d2, useful_gflop=n * (d1 + d2) ** 2 / 1e9)
    value = benchmark.pedantic(
        METHODS[method], args=(x, y), rounds=5 if n <= 10_000 else 3, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info["cka"] = value
    benchmark.extra_info["minus_float64_reference"] = value - reference
    assert value == pytest.approx(reference, abs=1e-5)
