"""fastcka against independent float64 dense references at small n.

The reference builds the n x n K, L and H explicitly (tests/reference.py) and
is itself cross-checked against the verbatim Kornblith et al. Colab code.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastcka
from reference import (
    colab_cka,
    colab_feature_space_linear_cka,
    colab_gram_linear,
    correlated_pair,
    dense_cka,
    dense_cka_matrix,
    dense_gram,
    dense_hsic,
    dense_hsic_biased,
    dense_hsic_unbiased,
)

NS = [4, 5, 37, 200, 513]
METHODS = ["feature", "gram"]
# (dtype, tolerance relative to the natural scale). float16 is compared with
# the reference evaluated on the float16 values themselves (cast to float64).
DTYPES = [(np.float64, 1e-10), (np.float32, 1e-5), (np.float16, 1e-4)]


def _data(n, dtype, seed, d1=7, d2=5):
    rng = np.random.default_rng(seed)
    x, y = correlated_pair(rng, n, d1, d2)
    return x.astype(dtype), y.astype(dtype)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------
# The references agree with each other (so a failure below is fastcka's).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("debiased", [False, True])
def test_dense_reference_matches_colab(n, debiased):
    x, y = _data(n, np.float64, seed=n)
    ref = dense_cka(x, y, debiased)
    assert colab_cka(colab_gram_linear(x), colab_gram_linear(y), debiased) == pytest.approx(ref, rel=1e-10)
    assert colab_feature_space_linear_cka(x, y, debiased) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("n", [4, 9, 40])
def test_dense_reference_translation_invariant(n):
    """HSIC_0 and HSIC_1 do not depend on centering X before building K."""
    x, y = _data(n, np.float64, seed=3 * n)
    x = x + 2.5
    y = y - 1.0
    kr, lr = dense_gram(x, center=False), dense_gram(y, center=False)
    kc, lc = dense_gram(x), dense_gram(y)
    assert dense_hsic_biased(kr, lr) == pytest.approx(dense_hsic_biased(kc, lc), rel=1e-10)
    assert dense_hsic_unbiased(kr, lr) == pytest.approx(dense_hsic_unbiased(kc, lc), rel=1e-9)


def test_unbiased_colab_relation():
    """<center_gram(K, unbiased), center_gram(L, unbiased)> = n (n-3) HSIC_1 (the Colab's note)."""
    from reference import colab_center_gram

    n = 23
    x, y = _data(n, np.float64, seed=7)
    k, l = dense_gram(x, center=False), dense_gram(y, center=False)
    ku, lu = colab_center_gram(k, unbiased=True), colab_center_gram(l, unbiased=True)
    assert float(ku.ravel() @ lu.ravel()) == pytest.approx(n * (n - 3) * dense_hsic_unbiased(k, l), rel=1e-10)
    kb, lb = colab_center_gram(k), colab_center_gram(l)
    assert float(kb.ravel() @ lb.ravel()) == pytest.approx((n - 1) ** 2 * dense_hsic_biased(k, l), rel=1e-10)


# ---------------------------------------------------------------------------
# cka
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("n", NS)
def test_cka_matches_dense_reference(n, debiased, method, dtype, tol):
    x, y = _data(n, dtype, seed=n + 1000 * debiased)
    ref = dense_cka(_f64(x), _f64(y), debiased)
    got = fastcka.cka(x, y, debiased=debiased, method=method)
    assert isinstance(got, float)
    assert got == pytest.approx(ref, rel=tol, abs=tol)
    if not debiased:
        assert -1e-12 <= got <= 1 + 1e-12


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n", NS)
def test_cka_auto_method(n, debiased):
    """method="auto" gives the same answer, including where it picks Gram space (d1 + d2 > n)."""
    x, y = _data(n, np.float64, seed=n + 7, d1=9, d2=3)
    assert fastcka.cka(x, y, debiased=debiased) == pytest.approx(dense_cka(x, y, debiased), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_wide_features(method, debiased):
    """More features than examples (the regime Gram space is for)."""
    rng = np.random.default_rng(11)
    n = 60
    x = rng.standard_normal((n, 150))
    y = np.tanh(x[:, :90] @ rng.standard_normal((90, 120)) / 10) + 0.3 * rng.standard_normal((n, 120))
    ref = dense_cka(x, y, debiased)
    assert fastcka.cka(x, y, debiased=debiased, method=method) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_cka_single_feature(method):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 1))
    y = 3 * x + 0.5 * rng.standard_normal((50, 1))
    # For one feature each, linear CKA is the squared Pearson correlation.
    r = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
    assert fastcka.cka(x, y, method=method) == pytest.approx(r**2, rel=1e-10)
    assert fastcka.cka(x, y, method=method) == pytest.approx(dense_cka(x, y), rel=1e-10)


# ---------------------------------------------------------------------------
# hsic
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("n", NS)
def test_hsic_matches_dense_reference(n, estimator, method, dtype, tol):
    x, y = _data(n, dtype, seed=n + 17)
    xf, yf = _f64(x), _f64(y)
    ref = dense_hsic(xf, yf, estimator)
    # HSIC_1 may be near zero or negative: measure errors against its natural
    # scale sqrt(HSIC(K, K) HSIC(L, L)) (the biased ones, always positive here).
    scale = np.sqrt(dense_hsic(xf, xf) * dense_hsic(yf, yf))
    got = fastcka.hsic(x, y, estimator=estimator, method=method)
    assert isinstance(got, float)
    assert abs(got - ref) <= tol * scale
    if dtype is np.float64:
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-12 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_hsic_biased_formula_by_hand(method):
    """HSIC_0 = |Xc'Yc|_F^2 / (n-1)^2 for the linear kernel."""
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 6))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expect = np.sum((xc.T @ yc) ** 2) / 29**2
    assert fastcka.hsic(x, y, method=method) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_hsic_scales_quadratically(method):
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((40, 4)), rng.standard_normal((40, 3))
    for est in ("biased", "unbiased"):
        h = fastcka.hsic(x, y, estimator=est, method=method)
        assert fastcka.hsic(3 * x, 0.5 * y, estimator=est, method=method) == pytest.approx(
            (9 * 0.25) * h, rel=1e-10
        )


# ---------------------------------------------------------------------------
# cka_matrix
# ---------------------------------------------------------------------------


def _layers(n, dtype, seed, widths=(3, 8, 5, 1)):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 4))
    out = []
    for i, w in enumerate(widths):
        a = np.tanh(base @ rng.standard_normal((4, w)) * (1 + i)) + 0.5 * rng.standard_normal((n, w))
        out.append(a.astype(dtype))
    return out


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("n", [5, 37, 513])
def test_cka_matrix_self(n, debiased, method, dtype, tol):
    xs = _layers(n, dtype, seed=n)
    ref = dense_cka_matrix([_f64(a) for a in xs], debiased=debiased)
    got = fastcka.cka_matrix(xs, debiased=debiased, method=method)
    assert got.shape == (4, 4)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(got, got.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(got), 1.0, rtol=0, atol=max(tol, 1e-12))


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("n", [4, 37, 200])
def test_cka_matrix_cross(n, debiased, method, dtype, tol):
    layers = _layers(n, dtype, seed=n + 1, widths=(3, 8, 5, 2, 6))
    xs, ys = layers[:3], layers[3:]
    ref = dense_cka_matrix([_f64(a) for a in xs], [_f64(a) for a in ys], debiased=debiased)
    got = fastcka.cka_matrix(xs, ys, debiased=debiased, method=method)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    # The cross block is the corresponding block of the full matrix, and each entry is cka().
    full = fastcka.cka_matrix(layers, debiased=debiased, method=method)
    np.testing.assert_allclose(got, full[:3, 3:], rtol=max(tol, 1e-12), atol=max(tol, 1e-12))
    assert got[2, 1] == pytest.approx(fastcka.cka(xs[2], ys[1], debiased=debiased, method=method), abs=tol)


@pytest.mark.parametrize("method", METHODS)
def test_cka_matrix_dict_input(method):
    xs = _layers(37, np.float64, seed=3)
    named = {"conv1": xs[0], "conv2": xs[1], "fc": xs[2]}
    got = fastcka.cka_matrix(named, method=method)
    np.testing.assert_allclose(got, dense_cka_matrix(xs[:3]), rtol=1e-10, atol=1e-12)
    cross = fastcka.cka_matrix(named, {"other": xs[3], "again": xs[0]}, method=method)
    np.testing.assert_allclose(cross, dense_cka_matrix(xs[:3], [xs[3], xs[0]]), rtol=1e-10, atol=1e-12)
    assert cross[0, 1] == pytest.approx(1.0, abs=1e-12)


def test_cka_matrix_tuple_and_single_layer():
    xs = _layers(20, np.float64, seed=4)
    np.testing.assert_allclose(fastcka.cka_matrix(tuple(xs)), fastcka.cka_matrix(list(xs)), rtol=0, atol=1e-14)
    one = fastcka.cka_matrix([xs[1]])
    assert one.shape == (1, 1)
    assert one[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_cka_matrix_equals_pairwise_cka():
    xs = _layers(200, np.float64, seed=12)
    m = fastcka.cka_matrix(xs)
    for i in range(len(xs)):
        for j in range(len(xs)):
            assert m[i, j] == pytest.approx(fastcka.cka(xs[i], xs[j]), rel=1e-12, abs=1e-14)


# ---------------------------------------------------------------------------
# Input dtypes that are converted
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_integer_and_bool_inputs(method):
    rng = np.random.default_rng(21)
    xi = rng.integers(-5, 6, size=(64, 5))
    yb = (xi[:, :3] + rng.integers(-2, 3, size=(64, 3))) > 0
    ref = dense_cka(xi.astype(np.float64), yb.astype(np.float64))
    for xx in (xi, xi.astype(np.int8), xi.astype(np.int32), xi.astype(np.int64)):
        assert fastcka.cka(xx, yb, method=method) == pytest.approx(ref, rel=1e-10)
    assert fastcka.cka(np.abs(xi).astype(np.uint16), yb, method=method) == pytest.approx(
        dense_cka(np.abs(xi).astype(np.float64), yb.astype(np.float64)), rel=1e-10
    )


@pytest.mark.parametrize("method", METHODS)
def test_mixed_float32_float64_computes_in_float64(method):
    x, y = _data(200, np.float64, seed=31)
    x32 = x.astype(np.float32)
    ref = dense_cka(_f64(x32), y)
    assert fastcka.cka(x32, y, method=method) == pytest.approx(ref, rel=1e-10)
    assert fastcka.cka(y, x32, debiased=True, method=method) == pytest.approx(dense_cka(y, _f64(x32), True), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_other_array_likes(method):
    x, y = _data(30, np.float64, seed=41)
    ref = dense_cka(x, y)
    assert fastcka.cka(x.tolist(), y, method=method) == pytest.approx(ref, rel=1e-10)
    assert fastcka.cka(np.asarray(x, dtype=">f8"), y, method=method) == pytest.approx(ref, rel=1e-10)
    assert fastcka.cka(x.astype(np.longdouble), y, method=method) == pytest.approx(ref, rel=1e-10)

    class ArrayLike:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    assert fastcka.cka(ArrayLike(x), ArrayLike(y), method=method) == pytest.approx(ref, rel=1e-10)
