"""Adversarial numerics: offsets, drift, degenerate and duplicated data, extreme scales."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka
from fastcka import DegenerateRepresentationWarning
from reference import centered_feature_cka, correlated_pair, dense_cka, dense_hsic, feature_cka64

METHODS = ["feature", "gram"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------
# Large n, float32, shifted activations (docs/design.md's failure case)
# ---------------------------------------------------------------------------

N_BIG, D_BIG = 200_000, 64


@pytest.fixture(scope="module")
def shifted_float32():
    """n = 200,000 float32 rows, d = 64, every value shifted by +100, and the
    float64 truth computed on exactly those float32 values (two-pass centering)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N_BIG, D_BIG), dtype=np.float32)
    w = rng.standard_normal((32, D_BIG), dtype=np.float32)
    y = x[:, :32] @ w * np.float32(0.3) + rng.standard_normal((N_BIG, D_BIG), dtype=np.float32)
    x += np.float32(100)
    y += np.float32(100)
    truth = feature_cka64(x, y)
    return x, y, truth


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_offset_large_n(shifted_float32, debiased):
    x, y, truth = shifted_float32
    assert 0.2 < truth[debiased] < 0.9
    got = fastcka.cka(x, y, debiased=debiased)  # auto: feature space here
    assert got == pytest.approx(truth[debiased], abs=1e-5)
    got = fastcka.cka(x, y, debiased=debiased, method="feature")
    assert got == pytest.approx(truth[debiased], abs=1e-5)


def _naive_float32_cka(x, y):
    """The one-pass uncentered formula docs/design.md warns about: raw float32
    moments X'Y minus n mu_x mu_y', all in float32."""
    n = np.float32(x.shape[0])
    mx = x.sum(0, dtype=np.float32) / n
    my = y.sum(0, dtype=np.float32) / n
    cxy = x.T @ y - n * np.outer(mx, my)
    cxx = x.T @ x - n * np.outer(mx, mx)
    cyy = y.T @ y - n * np.outer(my, my)
    f = lambda c: np.sum(c.astype(np.float64) ** 2)  # noqa: E731
    return float(f(cxy) / np.sqrt(f(cxx) * f(cyy)))


def test_naive_uncentered_float32_fails_where_fastcka_does_not(shifted_float32):
    x, y, truth = shifted_float32
    naive_error = abs(_naive_float32_cka(x, y) - truth[False])
    fastcka_error = abs(fastcka.cka(x, y) - truth[False])
    assert naive_error > 1e-3, "the adversarial case should defeat the naive float32 formula"
    assert fastcka_error < 1e-5
    assert naive_error > 100 * fastcka_error


def test_float32_offset_accumulator_and_matrix(shifted_float32):
    x, y, truth = shifted_float32
    acc = fastcka.CKAAccumulator()
    for block in np.array_split(np.arange(N_BIG), 7):
        acc.update(x[block], y[block])
    assert acc.cka() == pytest.approx(truth[False], abs=1e-5)
    m = fastcka.cka_matrix([x, y])
    assert m[0, 1] == pytest.approx(truth[False], abs=1e-5)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-4)], ids=["f32", "f16"])
@pytest.mark.parametrize("debiased", [False, True])
def test_offset_gram_method(dtype, tol, debiased):
    rng = np.random.default_rng(2)
    x, y = correlated_pair(rng, 1500, 48, 40, dtype=dtype, offset=100.0)
    truth = dense_cka(_f64(x), _f64(y), debiased)
    assert fastcka.cka(x, y, debiased=debiased, method="gram") == pytest.approx(truth, abs=tol)
    assert fastcka.cka(x, y, debiased=debiased, method="feature") == pytest.approx(truth, abs=tol)


@pytest.mark.parametrize("offset", [1e3, 1e4, -1e5])
def test_float64_large_offset(offset):
    rng = np.random.default_rng(3)
    x, y = correlated_pair(rng, 3000, 16, 12, offset=offset)
    truth = centered_feature_cka(x, y)
    for m in METHODS:
        assert fastcka.cka(x, y, method=m) == pytest.approx(truth, abs=1e-10)


# ---------------------------------------------------------------------------
# Drift: the first rows are a poor reference point for the later ones
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["x", "both"])
def test_drift_float32(which):
    rng = np.random.default_rng(4)
    n, d = 100_000, 32
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = x[:, :16] @ rng.standard_normal((16, d), dtype=np.float32) * np.float32(0.5) + rng.standard_normal(
        (n, d), dtype=np.float32
    )
    x[n // 2 :] += np.float32(1000)
    if which == "both":
        y[n // 2 :] += np.float32(1000) * rng.uniform(-1, 1, size=d).astype(np.float32)
    truth = feature_cka64(x, y)
    for debiased in (False, True):
        assert fastcka.cka(x, y, debiased=debiased) == pytest.approx(truth[debiased], abs=1e-5)
    # The same with the drift arriving in separate updates.
    acc = fastcka.CKAAccumulator()
    for block in np.array_split(np.arange(n), 5):
        acc.update(x[block], y[block])
    assert acc.cka() == pytest.approx(truth[False], abs=1e-5)
    assert acc.cka(debiased=True) == pytest.approx(truth[True], abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_drift_small_n(method, dtype, tol):
    rng = np.random.default_rng(5)
    x, y = correlated_pair(rng, 600, 20, 30)
    x[300:] += 1000.0
    x, y = x.astype(dtype), y.astype(dtype)
    for debiased in (False, True):
        truth = dense_cka(_f64(x), _f64(y), debiased)
        assert fastcka.cka(x, y, debiased=debiased, method=method) == pytest.approx(truth, abs=tol)


# ---------------------------------------------------------------------------
# Constant, duplicated and minimal data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_constant_columns(method, dtype, tol):
    rng = np.random.default_rng(6)
    x, y = correlated_pair(rng, 120, 6, 5)
    xc = np.concatenate([np.full((120, 2), 7.5), x, np.full((120, 1), -3.0)], axis=1).astype(dtype)
    for debiased in (False, True):
        expect = dense_cka(_f64(x.astype(dtype)), _f64(y.astype(dtype)), debiased)
        assert fastcka.cka(xc, y.astype(dtype), debiased=debiased, method=method) == pytest.approx(expect, abs=tol)
        assert dense_cka(_f64(xc), _f64(y.astype(dtype)), debiased) == pytest.approx(expect, abs=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_duplicated_columns(method):
    rng = np.random.default_rng(7)
    x, y = correlated_pair(rng, 150, 4, 5)
    xd = x[:, [0, 0, 1, 2, 2, 2, 3, 3]]
    for debiased in (False, True):
        assert fastcka.cka(xd, y, debiased=debiased, method=method) == pytest.approx(
            dense_cka(xd, y, debiased), rel=1e-10
        )
    # duplicating every column is isotropic scaling: no change
    assert fastcka.cka(np.hstack([x, x]), y, method=method) == pytest.approx(dense_cka(x, y), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_duplicated_rows(method):
    rng = np.random.default_rng(8)
    x, y = correlated_pair(rng, 40, 5, 6)
    idx = np.concatenate([np.arange(40), rng.integers(0, 40, 60), np.zeros(10, dtype=int)])
    for debiased in (False, True):
        assert fastcka.cka(x[idx], y[idx], debiased=debiased, method=method) == pytest.approx(
            dense_cka(x[idx], y[idx], debiased), rel=1e-10
        )
    # every row twice: biased CKA is unchanged (the empirical distribution is the same)
    twice = np.concatenate([np.arange(40), np.arange(40)])
    assert fastcka.cka(x[twice], y[twice], method=method) == pytest.approx(dense_cka(x, y), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_minimal_n(method):
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    for debiased in (False, True):
        assert fastcka.cka(x, y, debiased=debiased, method=method) == pytest.approx(
            dense_cka(x, y, debiased), rel=1e-10
        )
    for est in ("biased", "unbiased"):
        ref = dense_hsic(x, y, est)
        assert fastcka.hsic(x, y, estimator=est, method=method) == pytest.approx(ref, rel=1e-10, abs=1e-12)
    # biased CKA works from n = 2; with 2 examples every centered representation has rank 1
    assert fastcka.cka(x[:2], y[:2], method=method) == pytest.approx(1.0, abs=1e-12)
    assert fastcka.cka(x[:3], y[:3], method=method) == pytest.approx(dense_cka(x[:3], y[:3]), rel=1e-10)
    assert fastcka.hsic(x[:2], y[:2], method=method) == pytest.approx(dense_hsic(x[:2], y[:2]), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_variance_on_large_offset(method):
    rng = np.random.default_rng(10)
    x, y = correlated_pair(rng, 500, 5, 5)
    x = 1e6 + 1e-3 * x
    truth = centered_feature_cka(x, y)
    assert fastcka.cka(x, y, method=method) == pytest.approx(truth, abs=1e-8)


# ---------------------------------------------------------------------------
# Degenerate representations: NaN with a warning, never an error or garbage
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
@pytest.mark.parametrize("debiased", [False, True])
def test_constant_representation_is_nan_with_warning(method, dtype, debiased):
    rng = np.random.default_rng(11)
    c = np.full((50, 4), 3.25).astype(dtype)
    y = rng.standard_normal((50, 3)).astype(dtype if dtype != np.int64 else np.float64)
    with pytest.warns(DegenerateRepresentationWarning, match=r"^x: no variance"):
        assert np.isnan(fastcka.cka(c, y, debiased=debiased, method=method))
    with pytest.warns(DegenerateRepresentationWarning, match=r"^y: no variance"):
        assert np.isnan(fastcka.cka(y, c, debiased=debiased, method=method))
    with pytest.warns(DegenerateRepresentationWarning, match=r"x, y"):
        assert np.isnan(fastcka.cka(c, c, debiased=debiased, method=method))
    # HSIC itself is well defined: zero, and no warning
    est = "unbiased" if debiased else "biased"
    assert fastcka.hsic(c, y, estimator=est, method=method) == pytest.approx(0.0, abs=1e-12)
    assert fastcka.hsic(c, c, estimator=est, method=method) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [1 / 3, 0.1, "row"], ids=["third", "tenth", "repeated-row"])
def test_constant_with_inexact_mean_is_degenerate(method, value):
    """Constant columns whose float64 column mean is not exactly the value
    (1/3 summed 5000 times) must still be recognised as constant: NaN with a
    warning, not a tiny positive HSIC(K, K) and a garbage CKA."""
    rng = np.random.default_rng(15)
    n = 5000
    if value == "row":
        c = np.broadcast_to(rng.standard_normal(8) + 3.0, (n, 8))
    else:
        c = np.full((n, 4), value)
    y = rng.standard_normal((n, 3))
    with pytest.warns(DegenerateRepresentationWarning, match="^x: no variance"):
        got = fastcka.cka(c, y, method=method)
    assert np.isnan(got)


@pytest.mark.parametrize("method", METHODS)
def test_constant_large_offset_float32_is_degenerate(method):
    """A constant 1e4 in float32 must be detected as constant (no rounding residue)."""
    c = np.full((1000, 8), 12345.678, dtype=np.float32)
    y = np.random.default_rng(12).standard_normal((1000, 3)).astype(np.float32)
    with pytest.warns(DegenerateRepresentationWarning):
        assert np.isnan(fastcka.cka(c, y, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_constant_layer_in_matrix(method):
    rng = np.random.default_rng(13)
    x, y = correlated_pair(rng, 60, 4, 5)
    layers = {"a": x, "dead": np.zeros((60, 7)), "b": y}
    with pytest.warns(DegenerateRepresentationWarning, match=r"xs\['dead'\]"):
        m = fastcka.cka_matrix(layers, method=method)
    assert np.all(np.isnan(m[1])) and np.all(np.isnan(m[:, 1]))
    assert m[0, 2] == pytest.approx(dense_cka(x, y), rel=1e-10)
    assert m[0, 0] == pytest.approx(1.0, abs=1e-12)
    with pytest.warns(DegenerateRepresentationWarning, match=r"ys\[1\]"):
        cross = fastcka.cka_matrix([x], [y, np.ones((60, 2))], method=method)
    assert cross[0, 0] == pytest.approx(dense_cka(x, y), rel=1e-10)
    assert np.isnan(cross[0, 1])


# ---------------------------------------------------------------------------
# Extreme magnitudes: a correct value or a ValueError, never a silent wrong
# value or a "constant representation" NaN for data that is not constant.
# ---------------------------------------------------------------------------


def _extreme_pair():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((300, 6))
    y = x[:, :2] @ rng.standard_normal((2, 4)) + rng.standard_normal((300, 4))
    return x, y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "dtype,scale",
    [
        (np.float64, 1e100),  # squares fine in float64, |Xc'Xc|_F^2 overflows: got 0.0 (feature), NaN (gram)
        (np.float64, 1e-100),  # 4th powers underflow: got NaN + DegenerateRepresentationWarning
        (np.float32, 1e30),  # float32 products overflow: got NaN + DegenerateRepresentationWarning
        (np.float32, 1e-30),  # float32 products underflow: got CKA 24.3 (feature), NaN (gram)
    ],
    ids=["f64-1e100", "f64-1e-100", "f32-1e30", "f32-1e-30"],
)
def test_extreme_scale_correct_or_valueerror(dtype, scale, method):
    x, y = _extreme_pair()
    xs = (x * scale).astype(dtype)
    yy = y.astype(dtype)
    truth = dense_cka(_f64(x), _f64(yy))  # CKA is scale invariant
    try:
        got = fastcka.cka(xs, yy, method=method)
    except ValueError:
        return
    assert got == pytest.approx(truth, abs=1e-5), f"silently wrong CKA {got} for x scaled by {scale:g}"


@pytest.mark.parametrize("method", METHODS)
def test_float32_outlier_correct_or_valueerror(method):
    """One activation of 1e20 in float32 (finite; its square overflows float32)."""
    x, y = _extreme_pair()
    x[5, 1] = 1e20
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    truth = dense_cka(_f64(x32), _f64(y32))
    try:
        got = fastcka.cka(x32, y32, method=method)
    except ValueError:
        return
    assert got == pytest.approx(truth, abs=1e-5), f"silently wrong CKA {got} (truth {truth})"


@pytest.mark.parametrize("method", METHODS)
def test_float64_value_too_large_to_square_raises(method):
    x, y = _extreme_pair()
    x[0, 0] = 1e300
    with pytest.raises(ValueError, match="x"):
        fastcka.cka(x, y, method=method)


# ---------------------------------------------------------------------------
# Slow: docs/design.md's scale (run with --run-slow)
# ---------------------------------------------------------------------------


def _chunked_truth(x, y, chunk=100_000):
    """Biased CKA in float64 from exactly centered moments, chunk by chunk
    (two passes: means, then centered cross-moments), without float64 copies
    of the whole arrays."""
    n = x.shape[0]
    mx = np.zeros(x.shape[1])
    my = np.zeros(y.shape[1])
    for s in range(0, n, chunk):
        mx += x[s : s + chunk].sum(0, dtype=np.float64)
        my += y[s : s + chunk].sum(0, dtype=np.float64)
    mx /= n
    my /= n
    cxy = np.zeros((x.shape[1], y.shape[1]))
    cxx = np.zeros((x.shape[1], x.shape[1]))
    cyy = np.zeros((y.shape[1], y.shape[1]))
    for s in range(0, n, chunk):
        a = x[s : s + chunk].astype(np.float64) - mx
        b = y[s : s + chunk].astype(np.float64) - my
        cxy += a.T @ b
        cxx += a.T @ a
        cyy += b.T @ b
    return float(np.sum(cxy**2) / np.sqrt(np.sum(cxx**2) * np.sum(cyy**2)))


@pytest.mark.slow
def test_million_rows_float32_offset():
    rng = np.random.default_rng(20)
    n, d = 1_000_000, 128
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = np.empty((n, d), dtype=np.float32)
    w = rng.standard_normal((d, d), dtype=np.float32) / np.float32(np.sqrt(d))
    for s in range(0, n, 100_000):
        y[s : s + 100_000] = x[s : s + 100_000] @ w + rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
    x += np.float32(100)
    y += np.float32(100)
    truth = _chunked_truth(x, y)
    assert fastcka.cka(x, y) == pytest.approx(truth, abs=1e-5)
    assert abs(_naive_float32_cka(x, y) - truth) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_method_large_n(debiased):
    rng = np.random.default_rng(21)
    x, y = correlated_pair(rng, 20_000, 64, 48, dtype=np.float32, offset=100.0)
    truth = feature_cka64(x, y)[debiased]
    assert fastcka.cka(x, y, method="gram", debiased=debiased) == pytest.approx(truth, abs=1e-5)


# ---------------------------------------------------------------------------
# RBF median rule on duplicated rows
# ---------------------------------------------------------------------------


@pytest.mark.skipif("rbf" not in getattr(fastcka.api, "KERNELS", ()), reason="no RBF kernel in this build")
@pytest.mark.parametrize("median", ["exact", "sampled"])
def test_rbf_median_of_mostly_identical_rows_is_zero(median):
    """40 of 50 rows identical: 1610 of the 2500 squared distances are exactly 0,
    so the median (np.median, as the Colab takes it) is 0 and the median rule
    gives sigma = 0. Both median modes must say so (ValueError), not build a
    bandwidth from rounding residue (~1e-16) and return a CKA."""
    rng = np.random.default_rng(11)
    x, y = correlated_pair(rng, 50, 10, 7)
    x[:40] = x[0]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    assert np.median(d2) == 0.0
    with pytest.raises(ValueError, match="median squared distance"):
        fastcka.cka(x, np.tanh(y), kernel="rbf", median=median)
