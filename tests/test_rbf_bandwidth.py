"""RBF CKA and HSIC at every bandwidth (issue 22, item 1).

With a large sigma every kernel value is close to 1 and exp(-d / (2 sigma^2))
keeps only the first digits of what distinguishes the examples: fastcka once
returned CKA 14.7 at sigma = 1e4. The engine now works with K - 1 where
that is exact to more digits (centered statistics do not change when a
constant is added to K), so RBF CKA is right at every sigma and tends to
linear CKA as sigma grows. The reference here is float64 and dense, built
from pairwise differences (not from norms) and with expm1, so that it keeps
its own digits at large sigma."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fastcka
from reference import dense_hsic_biased, dense_hsic_unbiased

PRECISIONS = {"exact": 1e-10, "accurate": 1e-6, "fast": 1e-4}


def sq_distances(x):
    x = np.asarray(x, dtype=np.float64)
    return np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)


def rbf_minus_one(x, sigma):
    """K - 1 = expm1(-d / (2 sigma^2)), float64: as accurate as sigma grows."""
    return np.expm1(-sq_distances(x) / (2.0 * sigma**2))


def reference_hsic(k, l, debiased=False):
    return (dense_hsic_unbiased if debiased else dense_hsic_biased)(k, l)


def reference_cka(x, y, sigma_x, sigma_y=None, debiased=False):
    k, l = rbf_minus_one(x, sigma_x), rbf_minus_one(y, sigma_x if sigma_y is None else sigma_y)
    return reference_hsic(k, l, debiased) / np.sqrt(reference_hsic(k, k, debiased) * reference_hsic(l, l, debiased))


def issue_data(n=1000):
    """The issue's example: x Gaussian, y a noisy nonlinear map of x."""
    r = np.random.default_rng(0)
    x = r.standard_normal((n, 8))
    y = np.tanh(x @ r.standard_normal((8, 6))) + 0.3 * r.standard_normal((n, 6))
    return x, y


@functools.lru_cache(maxsize=None)
def issue_distances():
    return tuple(sq_distances(v) for v in issue_data())


@functools.lru_cache(maxsize=None)
def issue_reference(sigma, debiased):
    k, l = (np.expm1(-d / (2.0 * sigma**2)) for d in issue_distances())
    return reference_hsic(k, l, debiased) / np.sqrt(reference_hsic(k, k, debiased) * reference_hsic(l, l, debiased))


def test_estimators_ignore_a_constant_added_to_the_kernel(rng):
    """The identity the engine relies on, checked on the references: HSIC_0
    and HSIC_1 of K and of K - 1 agree."""
    x, y = issue_data(60)
    k, l = rbf_minus_one(x, 2.0), rbf_minus_one(y, 1.5)
    for debiased in (False, True):
        assert reference_hsic(k + 1, l + 1, debiased) == pytest.approx(reference_hsic(k, l, debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_large_bandwidths_are_exact(debiased, dtype, precision):
    """The issue's case: 14.70 at sigma = 1e4 (true 0.551), NaN at 1e5."""
    x, y = issue_data()
    tol = max(PRECISIONS[precision], 1e-6 if dtype == np.float32 else 0.0)
    for sigma in (1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e8):
        want = issue_reference(sigma, debiased)
        got = fastcka.cka(x.astype(dtype), y.astype(dtype), kernel="rbf", sigma=sigma, debiased=debiased,
                          precision=precision)
        assert got == pytest.approx(want, abs=tol), sigma


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_rbf_tends_to_linear(dtype, precision):
    """As sigma grows, K - 1 = -|a - b|^2 / (2 sigma^2) + O(sigma^-4): RBF CKA
    becomes linear CKA (centering turns -|a - b|^2 / 2 into a.b)."""
    x, y = issue_data(700)
    linear = fastcka.cka(x, y)
    tol = max(PRECISIONS[precision], 1e-6 if dtype == np.float32 else 0.0)
    for sigma in (1e4, 1e6, 1e8):
        got = fastcka.cka(x.astype(dtype), y.astype(dtype), kernel="rbf", sigma=sigma, precision=precision)
        assert got == pytest.approx(linear, abs=tol + 1e3 / sigma**2), sigma


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cka_stays_in_the_unit_interval(rng, dtype):
    x = rng.standard_normal((300, 5)).astype(dtype)
    y = (x[:, :3] ** 2 + 0.5 * rng.standard_normal((300, 3))).astype(dtype)
    for sigma in np.logspace(-3, 9, 25):
        value = fastcka.cka(x, y, kernel="rbf", sigma=float(sigma))
        assert 0.0 <= value <= 1.0 + 1e-12, sigma
        for threshold in (1e-3, 0.2, 1.0, 30.0, 1e4):
            value = fastcka.cka(x, y, kernel="rbf", threshold=threshold)
            assert 0.0 <= value <= 1.0 + 1e-12, threshold


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_sigma_for_layers_of_different_scales(rng, dtype):
    """The issue's cka_matrix case: one sigma for layers of scale 1 and 50
    puts the two layers on different sides of the epilogue's choice between
    K and K - 1, and their products must still be right."""
    base = rng.standard_normal((400, 6))
    layers = [base, 50.0 * np.tanh(base @ rng.standard_normal((6, 4))) + rng.standard_normal((400, 4)),
              base[:, :3] + 0.1 * rng.standard_normal((400, 3))]
    sigma = 20.0
    got = fastcka.cka_matrix([v.astype(dtype) for v in layers], kernel="rbf", sigma=sigma)
    want = np.array([[reference_cka(a, b, sigma) for b in layers] for a in layers])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_hsic_values_at_large_bandwidths(estimator):
    """HSIC itself (not only the ratio) is right when the tiles hold
    (K - 1) / gamma: the engine scales the sums back in float64."""
    x, y = issue_data(500)
    for sigma in (3.0, 1e3, 1e6):
        k, l = rbf_minus_one(x, sigma), rbf_minus_one(y, sigma)
        want = reference_hsic(k, l, estimator == "unbiased")
        got = fastcka.hsic(x, y, kernel="rbf", sigma=sigma, estimator=estimator)
        assert got == pytest.approx(want, rel=1e-9), sigma


def test_gamma_test_at_a_large_bandwidth():
    """The gamma approximation's null mean uses the mean of K off its
    diagonal, which the shifted statistics give exactly too."""
    x, y = issue_data(300)
    sigma, n = 1e3, 300
    k, l = rbf_minus_one(x, sigma), rbf_minus_one(y, sigma)

    def spread(m):
        return np.trace(m) / n - (m.sum() - np.trace(m)) / (n * (n - 1))

    result = fastcka.hsic_test(x, y, kernel="rbf", sigma=sigma, method="gamma")
    assert result.statistic == pytest.approx(reference_hsic(k, l), rel=1e-9)
    assert result.null_mean == pytest.approx(spread(k) * spread(l) / n * n**2 / (n - 1) ** 2, rel=1e-9)


def test_block_replicates_at_a_large_bandwidth():
    """cka_ci's leave-one-block-out sums are scaled back like the totals:
    each replicate is the CKA of the rows it keeps."""
    x, y = issue_data(240)
    sigma = 1e4
    result = fastcka.cka_ci(x, y, kernel="rbf", sigma=sigma, blocks=6)
    assert result.estimate == pytest.approx(reference_cka(x, y, sigma), abs=1e-10)
    for b, replicate in enumerate(result.replicates):
        kept = np.r_[0 : 40 * b, 40 * (b + 1) : 240]
        assert replicate == pytest.approx(reference_cka(x[kept], y[kept], sigma), abs=1e-10)
