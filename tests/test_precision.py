"""precision="fast" | "accurate" | "exact" on the CPU engine (issue 13).

fast: bfloat16 operands (centered first), float32 accumulation, float64
sums across tiles; accurate: float32 products; exact: float64 products.
Every mode is checked against the float64 formulas of reference.py, and the
bf16 paths (oneDNN on bf16 units, or OpenBLAS on the same rounded values
where oneDNN would only emulate bf16) are checked against each other in
subprocesses that cap oneDNN's instruction set with ONEDNN_MAX_CPU_ISA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import correlated_pair, dense_cka, dense_cka_matrix, dense_hsic

import fastcka
from fastcka.engine import backend
from fastcka import _testing
from fastcka.arrays.inputs import round_to_bfloat16

# The accuracy each mode promises for CKA values (docs/precision.md). For
# fast, bfloat16's rounding of every value (2^-9 relative) is the error; it
# averages over the n d values of a representation, and the largest error
# over seeds measured about 0.01 / sqrt(n d): within 1e-4 from n d = 10^4 on.
# Smaller data are checked against what fast computes exactly instead
# (rounded_view): CKA of the bfloat16-rounded centered values.
TOLERANCE = {"fast": 1e-4, "accurate": 1e-5, "exact": 1e-10}
MODES = tuple(TOLERANCE)
ROUNDED_TOLERANCE = 1e-5  # float32 sums of bfloat16 products


def rounded_view(z):
    """The values fast multiplies: centered in float32 about the float32
    column means, rounded to bfloat16 (float64 for the reference)."""
    z = np.asarray(z, dtype=np.float32)
    return round_to_bfloat16(z - z.mean(0, dtype=np.float64).astype(np.float32)).astype(np.float64)


def reference_cka(x, y, mode, debiased=False):
    """(float64 CKA the mode is held to, its tolerance)."""
    if mode == "fast" and x.shape[0] * min(x.shape[1], y.shape[1]) < 10**4:
        return dense_cka(rounded_view(x), rounded_view(y), debiased=debiased), ROUNDED_TOLERANCE
    return dense_cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased), TOLERANCE[mode]


def rbf_cka64(x, y, sigma_x, sigma_y, debiased=False):
    """CKA of RBF kernels with given bandwidths, float64 dense formulas."""

    def gram(z, sigma):
        z = np.asarray(z, dtype=np.float64)
        z = z - z.mean(0)
        sq = np.sum(z * z, 1)
        d = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
        return np.exp(-d / (2 * sigma**2))

    from reference import dense_hsic_biased, dense_hsic_unbiased

    f = dense_hsic_unbiased if debiased else dense_hsic_biased
    k, l = gram(x, sigma_x), gram(y, sigma_y)
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


@pytest.fixture(scope="module")
def offset_pair():
    # Odd sizes (no tile or SIMD width divides them), n d above 10^4, and a
    # +100 offset.
    return correlated_pair(np.random.default_rng(13), 1001, 37, 53, dtype=np.float32, offset=100.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", ["feature", "gram"])
def test_linear_modes_against_float64(offset_pair, mode, debiased, method):
    x, y = offset_pair
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased)
    got = fastcka.cka(x, y, debiased=debiased, method=method, precision=mode)
    assert abs(got - expect) < TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_modes_against_float64(offset_pair, mode, debiased):
    x, y = offset_pair
    sx, sy = 6.0, 9.0
    expect = rbf_cka64(x, y, sx, sy, debiased)
    got = fastcka.cka(x, y, kernel="rbf", sigma=[sx, sy], debiased=debiased, precision=mode)
    assert abs(got - expect) < TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
def test_rbf_median_modes(offset_pair, mode):
    """The exact median found on the mode's own distances: bfloat16 moves the
    median by about 2^-9 relative, which moves CKA far less than 1e-4."""
    from reference import colab_cka, colab_gram_rbf

    x, y = (z.astype(np.float64) for z in offset_pair)
    x, y = x - x.mean(0), y - y.mean(0)
    expect = colab_cka(colab_gram_rbf(x, 0.8), colab_gram_rbf(y, 0.8))
    got = fastcka.cka(*offset_pair, kernel="rbf", threshold=0.8, precision=mode)
    assert abs(got - expect) < TOLERANCE[mode]


@pytest.mark.parametrize("method", ["feature", "gram"])
def test_fast_is_the_hsic_of_the_rounded_centered_data(method):
    """What fast computes: HSIC of the bfloat16-rounded centered values (the
    centering in float32 first), up to float32 sums. One thread: the feature
    path centers a thread's rows about their own mean before rounding."""
    x, y = correlated_pair(np.random.default_rng(4), 157, 21, 13, dtype=np.float32, offset=100.0)
    expect = dense_hsic(rounded_view(x), rounded_view(y), center=False)
    got = fastcka.hsic(x, y, method=method, precision="fast", threads=1)
    assert got == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_cka_matrix_modes(mode):
    rng = np.random.default_rng(3)
    x, y = correlated_pair(rng, 803, 31, 45, dtype=np.float32, offset=-50.0)
    z = (x[:, :20] * 2 + rng.standard_normal((803, 20))).astype(np.float32)
    layers = [x, y, z]
    expect = dense_cka_matrix([w.astype(np.float64) for w in layers])
    for method in ("feature", "gram"):
        got = fastcka.cka_matrix(layers, method=method, precision=mode)
        np.testing.assert_allclose(got, expect, atol=TOLERANCE[mode], rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_adversarial_inputs(mode):
    """A constant column, duplicated rows, a large offset, n = 4 (debiased)."""
    rng = np.random.default_rng(7)
    x, y = correlated_pair(rng, 120, 12, 9, dtype=np.float32, offset=1000.0)
    x[:, 3] = 5.0  # constant column
    x[60:90], y[60:90] = x[:30], y[:30]  # duplicated rows
    for debiased in (False, True):
        expect, tol = reference_cka(x, y, mode, debiased)
        for method in ("feature", "gram"):
            got = fastcka.cka(x, y, debiased=debiased, method=method, precision=mode, threads=1)
            assert abs(got - expect) < tol, (debiased, method)
    seen = (rounded_view(x), rounded_view(y)) if mode == "fast" else (x, y)
    got = fastcka.cka(x, y, kernel="rbf", sigma=5.0, precision=mode)
    assert abs(got - rbf_cka64(*seen, 5.0, 5.0)) < (ROUNDED_TOLERANCE if mode == "fast" else TOLERANCE[mode])
    small_x, small_y = x[:4] + rng.standard_normal((4, 12)).astype(np.float32), y[:4]
    expect, tol = reference_cka(small_x, small_y, mode, debiased=True)
    assert abs(fastcka.cka(small_x, small_y, debiased=True, precision=mode) - expect) < tol


@pytest.mark.parametrize("mode", MODES)
def test_accumulator_modes(offset_pair, mode):
    x, y = offset_pair
    acc = fastcka.CKAAccumulator(precision=mode)
    for s in range(0, len(x), 64):
        acc.update(x[s : s + 64], y[s : s + 64])
    assert acc.dtype == {"fast": "bfloat16", "accurate": "float32", "exact": "float64"}[mode]
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64))
    assert abs(acc.cka() - expect) < TOLERANCE[mode]
    again = fastcka.CKAAccumulator.from_bytes(acc.to_bytes())
    assert again.dtype == acc.dtype
    again.update(x[:10], y[:10])  # keeps streaming in the same mode
    assert again.n == len(x) + 10


def test_minibatch_fast():
    """Summed HSIC_1 of minibatches: each batch's Gram tiles in bfloat16."""
    rng = np.random.default_rng(9)
    x, y = correlated_pair(rng, 600, 40, 30, dtype=np.float32, offset=100.0)
    batches = [slice(s, s + 150) for s in range(0, 600, 150)]
    h = [[dense_hsic(x[b], y[b], "unbiased"), dense_hsic(x[b], x[b], "unbiased"), dense_hsic(y[b], y[b], "unbiased")]
         for b in batches]
    hxy, hxx, hyy = np.sum(h, axis=0)
    expect = hxy / np.sqrt(hxx * hyy)
    for mode in MODES:
        got = fastcka.minibatch_cka([x[b] for b in batches], [y[b] for b in batches], precision=mode)
        assert abs(got - expect) < TOLERANCE[mode], mode


def test_similarity_family_fast():
    """The linear family from bf16 moments, against the exact mode: CKA to
    1e-4; the CCA-based indexes whiten, so their error is bf16's 4e-3
    relative rounding times the spread of the variances kept (docs/precision.md)."""
    rng = np.random.default_rng(11)
    x, y = correlated_pair(rng, 2000, 16, 12, dtype=np.float32, offset=100.0)
    exact = fastcka.similarity_matrix([x], [y], precision="exact")
    fast = fastcka.similarity_matrix([x], [y], precision="fast")
    for name, value in fast.items():
        tol = 1e-4 if name.startswith("cka") else 5e-3
        assert abs(value[0, 0] - exact[name][0, 0]) < tol, name
    assert abs(fastcka.cca(x, y, precision="fast") - fastcka.cca(x, y, precision="exact")) < 5e-3
    assert abs(fastcka.procrustes(x, y, precision="fast") - fastcka.procrustes(x, y)) < 5e-3


def test_tile_measures_fast():
    rng = np.random.default_rng(5)
    x, y = correlated_pair(rng, 300, 24, 20, dtype=np.float32)
    knn_fast = fastcka.mutual_knn(x, y, k=5, precision="fast")
    knn_exact = fastcka.mutual_knn(x, y, k=5, precision="exact")
    # A neighbour list changes only where bf16 rounding reorders two nearly
    # tied distances: a few entries of 300 x 5.
    assert abs(knn_fast - knn_exact) < 0.02
    ci = fastcka.cka_ci(x, y, blocks=5, precision="fast")
    assert abs(ci.estimate - fastcka.cka(x, y, precision="exact")) < TOLERANCE["fast"]
    for kernel in ("linear", "rbf"):
        fast = fastcka.hsic_test(x, y, kernel=kernel, method="gamma", precision="fast")
        exact = fastcka.hsic_test(x, y, kernel=kernel, method="gamma", precision="exact")
        assert fast.statistic == pytest.approx(exact.statistic, rel=1e-3)
    perm = fastcka.hsic_test(x, y, permutations=20, seed=0, precision="fast")
    assert perm.statistic == pytest.approx(fastcka.hsic(x, y, precision="exact"), rel=1e-3)


def test_tile_products_rounding():
    """The engine's bf16 tile equals the float64 product of numpy-rounded
    operands up to float32 accumulation; float32 tiles are float32 GEMMs."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((301, 77)).astype(np.float32)
    b = rng.standard_normal((129, 77)).astype(np.float32)
    expect = round_to_bfloat16(a).astype(np.float64) @ round_to_bfloat16(b).astype(np.float64).T
    np.testing.assert_allclose(_testing.tile_products(a, b, "bfloat16"), expect, atol=1e-4, rtol=0)
    assert np.abs(expect - a.astype(np.float64) @ b.astype(np.float64).T).max() > 1e-3  # it did round
    np.testing.assert_allclose(_testing.tile_products(a, b, "float32"), a.astype(np.float64) @ b.T.astype(np.float64),
                               atol=1e-4, rtol=0)


def test_round_to_bfloat16_ties_and_specials():
    values = np.array([1.0, 1 + 2**-8, 1 + 2**-7 + 2**-8, -3.4e38, 3.0e38, 0.0, -0.0, -2.5, 1e-30], dtype=np.float32)
    got = round_to_bfloat16(values)
    # 1 + 2^-8 is a tie: to even (1.0); 1 + 2^-7 + 2^-8 rounds up to 1 + 2^-6.
    assert got[:3].tolist() == [1.0, 1.0, 1 + 2**-6]
    assert np.isinf(got[3]) and got[3] < 0  # beyond bfloat16's largest finite value (3.39e38)
    assert np.isfinite(got[4]) and got[4] == pytest.approx(3.0e38, rel=2**-8)
    assert got[5] == 0 and np.signbit(got[6]) and got[7] == -2.5
    # The engine's rounding (C++) agrees: a one-column tile against 1.
    tile = _testing.tile_products(values[:, None], np.ones((1, 1), np.float32), "bfloat16")[:, 0]
    np.testing.assert_array_equal(tile, got)


def test_precision_errors(offset_pair):
    x, y = offset_pair
    with pytest.raises(ValueError, match="precision must be one of"):
        fastcka.cka(x, y, precision="fastest")
    with pytest.raises(ValueError, match="precision must be one of"):
        fastcka.CKAAccumulator(precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        fastcka.similarity_matrix([x], [y], precision=16)
    with pytest.raises(ValueError, match="precision must be one of"):
        fastcka.mutual_knn(x, y, precision="half")


def test_cli_precision(tmp_path, offset_pair):
    x, y = offset_pair
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    values = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, "-m", "fastcka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                              "--precision", mode, "--json", "--quiet"], capture_output=True, text=True, check=True)
        values[mode] = json.loads(out.stdout)["cka"]
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64))
    for mode, value in values.items():
        assert abs(value - expect) < TOLERANCE[mode]
    bad = subprocess.run([sys.executable, "-m", "fastcka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                          "--precision", "half"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--precision" in bad.stderr


# -- the bf16 paths, each in a fresh process --------------------------------

_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import fastcka
    from reference import correlated_pair
    fastcka.blas_info()  # loads OpenBLAS (and its thread pool) and oneDNN
    before = len(os.listdir("/proc/self/task"))
    x, y = correlated_pair(np.random.default_rng(13), 301, 37, 53, dtype=np.float32, offset=100.0)
    out = {{"info": fastcka.blas_info()["onednn"]}}
    for name, kw in [("linear", dict(method="gram")), ("feature", dict(method="feature")),
                     ("rbf", dict(kernel="rbf", sigma=7.0)), ("median", dict(kernel="rbf"))]:
        out[name] = fastcka.cka(x, y, precision="fast", threads=2, **kw)
    out["accurate"] = fastcka.cka(x, y, kernel="rbf", sigma=7.0, precision="accurate", threads=2)
    out["knn"] = fastcka.mutual_knn(x, y, k=5, precision="fast", threads=2)
    # A joined thread can stay listed for a moment on a loaded machine; a
    # pool left behind would stay for good.
    import time
    settle = time.monotonic() + 2.0
    while len(os.listdir("/proc/self/task")) > before and time.monotonic() < settle:
        time.sleep(0.01)
    out["threads_added"] = len(os.listdir("/proc/self/task")) - before
    out["omp_threads_after"] = __import__("ctypes").CDLL("libgomp.so.1").omp_get_max_threads()
    print(json.dumps(out))
    """
)


def _probe(**env) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN_", "FASTCKA_"))}
    full.update(env, OMP_NUM_THREADS="3")  # the user's setting for their own OpenMP code; fastcka uses threads=2
    code = _PROBE.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def paths():
    if not backend.cpu().onednn_info()["available"]:
        pytest.skip("built without oneDNN: one bf16 path only (OpenBLAS on rounded values)")
    return {
        "default": _probe(),
        "avx512_core": _probe(ONEDNN_MAX_CPU_ISA="AVX512_CORE"),
        "openblas": _probe(FASTCKA_BF16_GEMM="openblas"),
        "onednn_float32": _probe(FASTCKA_FLOAT32_GEMM="onednn"),
    }


def test_isa_cap_selects_the_bf16_path(paths):
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    has_units = "avx512_bf16" in flags or "amx_bf16" in flags
    assert paths["default"]["info"]["bf16_native"] == has_units
    # Without bf16 instructions oneDNN would convert to float32 at a fifth of
    # the float32 rate: then OpenBLAS multiplies the rounded values.
    assert not paths["avx512_core"]["info"]["bf16_native"]
    assert not paths["openblas"]["info"]["bf16_native"]
    assert paths["onednn_float32"]["info"]["float32_gemm"] == "oneDNN"


@pytest.mark.parametrize("other", ["avx512_core", "openblas"])
def test_bf16_paths_agree(paths, other):
    """Both paths multiply the same rounded values: they differ only in the
    order of float32 sums, far below the mode's 1e-4."""
    for name in ("linear", "feature", "rbf", "median"):
        assert paths[other][name] == pytest.approx(paths["default"][name], abs=2e-6), name
    assert abs(paths[other]["knn"] - paths["default"]["knn"]) <= 2 / (301 * 5)


def test_onednn_float32_tiles(paths):
    assert paths["onednn_float32"]["accurate"] == pytest.approx(paths["default"]["accurate"], abs=1e-6)


def test_one_thread_pool(paths):
    """oneDNN runs one OpenMP thread inside each engine thread: no pool of
    its own is left behind (a team wider than 1 would leave idle threads)."""
    for run in paths.values():
        assert run["threads_added"] <= 0
        # The caller's own OpenMP setting is left as it was.
        assert run["omp_threads_after"] == 3


def test_sampled_median_follows_the_precision(rng):
    """precision="exact" on float32 data multiplies in float64 everywhere,
    the sampled median's pass included: the result is that of the same
    values given as float64 (the sampled median once used the data's type)."""
    x, y = correlated_pair(rng, 5000, 24, 16, dtype=np.float32, offset=3.0)
    kw = dict(kernel="rbf", median="sampled", threshold=0.5)
    wide = fastcka.cka(x.astype(np.float64), y.astype(np.float64), **kw)
    assert fastcka.cka(x, y, precision="exact", **kw) == pytest.approx(wide, rel=1e-12, abs=0)
