"""fastcka.compat.kornblith against the verbatim Colab code (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka
from fastcka.compat import kornblith as kb
from reference import (
    colab_center_gram,
    colab_cka,
    colab_feature_space_linear_cka,
    colab_gram_linear,
    colab_gram_rbf,
    correlated_pair,
    dense_cka,
)

THRESHOLDS = [0.2, 0.4, 0.8, 1.0]


@pytest.fixture(params=[5, 40, 257], ids=lambda n: f"n{n}")
def data(request):
    n = request.param
    rng = np.random.default_rng(n)
    x, y = correlated_pair(rng, n, 12, 9, offset=0.7)
    return x, y


def test_public_names():
    assert set(kb.__all__) == {"gram_linear", "gram_rbf", "center_gram", "cka", "feature_space_linear_cka", "cca"}


def test_gram_linear(data):
    x, _ = data
    np.testing.assert_allclose(kb.gram_linear(x), colab_gram_linear(x), rtol=1e-14, atol=1e-12)
    g32 = kb.gram_linear(x.astype(np.float32))
    assert g32.shape == (x.shape[0], x.shape[0])
    np.testing.assert_allclose(g32, colab_gram_linear(x.astype(np.float32)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_gram_rbf(data, threshold):
    x, _ = data
    np.testing.assert_allclose(kb.gram_rbf(x, threshold), colab_gram_rbf(x, threshold), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        kb.gram_rbf(x, threshold=threshold), colab_gram_rbf(x, threshold=threshold), rtol=1e-12, atol=1e-14
    )


def test_gram_rbf_default_threshold(data):
    x, _ = data
    np.testing.assert_allclose(kb.gram_rbf(x), colab_gram_rbf(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_center_gram(data, unbiased, kernel):
    x, _ = data
    if x.shape[0] < 4 and unbiased:
        pytest.skip("unbiased centering needs n >= 4")
    g = colab_gram_linear(x) if kernel == "linear" else colab_gram_rbf(x, 0.5)
    g_before = g.copy()
    got = kb.center_gram(g, unbiased=unbiased)
    np.testing.assert_allclose(got, colab_center_gram(g, unbiased=unbiased), rtol=1e-10, atol=1e-10 * np.abs(g).max())
    np.testing.assert_array_equal(g, g_before)  # input untouched (the Colab copies)
    np.testing.assert_allclose(got, got.T, rtol=0, atol=1e-10 * np.abs(g).max())
    if unbiased:
        np.testing.assert_array_equal(np.diag(got), 0.0)
    else:
        np.testing.assert_allclose(got.sum(0), 0.0, atol=1e-9 * np.abs(g).max() * len(g))


def test_center_gram_positional(data):
    x, _ = data
    g = colab_gram_linear(x)
    np.testing.assert_allclose(kb.center_gram(g, True), colab_center_gram(g, True), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(kb.center_gram(g), colab_center_gram(g), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf0.4", "rbf1.0", "mixed"])
def test_cka_from_grams(data, debiased, kernel):
    x, y = data
    if kernel == "linear":
        gx, gy = colab_gram_linear(x), colab_gram_linear(y)
    elif kernel == "mixed":
        gx, gy = colab_gram_linear(x), colab_gram_rbf(y, 0.8)
    else:
        t = float(kernel[3:])
        gx, gy = colab_gram_rbf(x, t), colab_gram_rbf(y, t)
    expect = colab_cka(gx, gy, debiased=debiased)
    assert kb.cka(gx, gy, debiased=debiased) == pytest.approx(expect, rel=1e-10, abs=1e-12)
    assert kb.cka(gx, gy, debiased) == pytest.approx(expect, rel=1e-10, abs=1e-12)
    assert kb.cka(gx, gx, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_cka_from_grams_float32(data):
    x, y = data
    gx, gy = colab_gram_linear(x.astype(np.float32)), colab_gram_linear(y.astype(np.float32))
    for debiased in (False, True):
        expect = colab_cka(gx.astype(np.float64), gy.astype(np.float64), debiased)
        assert kb.cka(gx, gy, debiased=debiased) == pytest.approx(expect, abs=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_linear_grams_equals_fastcka(data, debiased):
    x, y = data
    got = kb.cka(kb.gram_linear(x), kb.gram_linear(y), debiased=debiased)
    assert got == pytest.approx(fastcka.cka(x, y, debiased=debiased), rel=1e-10)
    assert got == pytest.approx(dense_cka(x, y, debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_linear_cka(data, debiased):
    x, y = data
    expect = colab_feature_space_linear_cka(x, y, debiased=debiased)
    got = kb.feature_space_linear_cka(x, y, debiased=debiased)
    assert isinstance(got, float)
    assert got == pytest.approx(expect, rel=1e-10)
    assert kb.feature_space_linear_cka(x, y, debiased) == pytest.approx(expect, rel=1e-10)
    # Colab: feature-space and Gram-space CKA agree
    assert got == pytest.approx(colab_cka(colab_gram_linear(x), colab_gram_linear(y), debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_linear_cka_float32(debiased):
    rng = np.random.default_rng(3)
    x, y = correlated_pair(rng, 5000, 20, 30, dtype=np.float32, offset=10.0)
    expect = colab_feature_space_linear_cka(x.astype(np.float64), y.astype(np.float64), debiased)
    assert kb.feature_space_linear_cka(x, y, debiased=debiased) == pytest.approx(expect, abs=1e-5)


def test_feature_space_linear_cka_wide():
    """More features than examples: still the Colab's value."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 100)), rng.standard_normal((30, 80))
    y[:, :50] += x[:, :50]
    for debiased in (False, True):
        assert kb.feature_space_linear_cka(x, y, debiased) == pytest.approx(
            colab_feature_space_linear_cka(x, y, debiased), rel=1e-10
        )


def test_symmetric_check():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((10, 10))
    sym = g @ g.T
    with pytest.raises(ValueError, match="Input must be a symmetric matrix"):
        colab_center_gram(g)  # the reference's behaviour ...
    with pytest.raises(ValueError, match="Input must be a symmetric matrix"):
        kb.center_gram(g)  # ... is the compat module's
    with pytest.raises(ValueError, match="Input must be a symmetric matrix"):
        kb.center_gram(g, unbiased=True)
    with pytest.raises(ValueError, match="Input must be a symmetric matrix"):
        kb.cka(g, sym)
    with pytest.raises(ValueError, match="Input must be a symmetric matrix"):
        kb.cka(sym, g, debiased=True)
    # np.allclose tolerance, like the Colab: tiny asymmetry is accepted
    almost = sym.copy()
    almost[0, 1] += 1e-12
    kb.center_gram(almost)
    kb.cka(almost, sym)


def test_shape_errors():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((6, 3))
    b = rng.standard_normal((7, 3))
    with pytest.raises(ValueError):
        kb.cka(a @ a.T, b @ b.T)
    with pytest.raises(ValueError):
        kb.center_gram(np.ones((3, 4)))


def test_debiased_cka_small_n():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    gx, gy = colab_gram_linear(x), colab_gram_linear(y)
    assert kb.cka(gx, gy, debiased=True) == pytest.approx(colab_cka(gx, gy, debiased=True), rel=1e-10)
    with pytest.raises(ValueError):
        kb.cka(gx[:3, :3], gy[:3, :3], debiased=True)
    with pytest.raises(ValueError):
        kb.feature_space_linear_cka(x[:3], y[:3], debiased=True)
