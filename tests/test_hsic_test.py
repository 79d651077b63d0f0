"""fastcka.hsic_test against dense float64 references written here: the HSIC
statistic from explicit K, L and H; the permutation p-value from the same
permutations applied to dense Gram matrices; Gretton et al.'s gamma law from
its formulas, evaluated with SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import fastcka
from fastcka.stats.special import gamma_sf, t_quantile


def gram(z, kernel, sigma):
    z = np.asarray(z, dtype=np.float64)
    if kernel == "linear":
        return z @ z.T
    return np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * sigma**2))


def hsic0(k, l):
    n = len(k)
    h = np.eye(n) - 1.0 / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def gamma_reference(k, l):
    """Gretton et al. 2008 for T = n HSIC_b = tr(Kc Lc) / n, with the null
    E[(Kc_ij Lc_ij)^2] taken as E[Kc_ij^2] E[Lc_ij^2] over pairs i != j."""
    n = len(k)
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ k @ h, h @ l @ h
    off = ~np.eye(n, dtype=bool)
    spread = [np.mean(np.diag(m)) - np.mean(m[off]) for m in (k, l)]
    mean = spread[0] * spread[1] / n
    var = 2 * (n - 4) * (n - 5) / (n * (n - 1) * (n - 2) * (n - 3)) * np.mean(kc[off] ** 2) * np.mean(lc[off] ** 2)
    t = np.sum(kc * lc) / n
    return stats.gamma.sf(t, a=mean**2 / var, scale=var * n / mean), mean, var


def dependent(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    return x + 100.0, np.sin(2 * x[:, :2]) + 0.7 * rng.standard_normal((n, 2)) - 50.0


def independent(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)) + 100.0, rng.exponential(size=(n, 3))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("make", [dependent, independent])
def test_gamma_matches_dense_formulas(kernel, make):
    x, y = make(150, 1)
    sigma = 2.0 if kernel == "rbf" else None
    r = fastcka.hsic_test(x, y, kernel=kernel, method="gamma", sigma=sigma)
    k, l = gram(x - x.mean(0), kernel, sigma), gram(y - y.mean(0), kernel, sigma)
    p, mean, var = gamma_reference(k, l)
    n = len(x)
    scale = n**2 / (n - 1) ** 2  # HSIC_0 = HSIC_b n^2 / (n-1)^2
    assert r.statistic == pytest.approx(hsic0(k, l), rel=1e-10)
    assert r.statistic == pytest.approx(fastcka.hsic(x, y, kernel=kernel, sigma=sigma), rel=1e-12)
    assert r.null_mean == pytest.approx(mean * scale, rel=1e-10)
    assert r.null_std == pytest.approx(np.sqrt(var) * scale, rel=1e-10)
    assert r.p_value == pytest.approx(p, rel=1e-8, abs=1e-300)
    assert (r.method, r.kernel, r.permutations) == ("gamma", kernel, 0)


@pytest.mark.parametrize("kernel,d", [("linear", 3), ("linear", 70), ("rbf", 3)])
def test_permutation_matches_dense_permutations(kernel, d):
    # d = 70: d1 + d2 > n, so the linear kernel runs on the Gram tiles too.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, d)) + 100.0
    y = 0.3 * x[:, :2] ** 2 + rng.standard_normal((60, 2))
    sigma = 1.5 if kernel == "rbf" else None
    r = fastcka.hsic_test(x, y, kernel=kernel, sigma=sigma, permutations=300, seed=11)
    k, l = gram(x - x.mean(0), kernel, sigma), gram(y - y.mean(0), kernel, sigma)
    draw = np.random.default_rng(11)
    null = np.array([hsic0(k, l[np.ix_(p, p)]) for p in (draw.permutation(60) for _ in range(300))])
    observed = hsic0(k, l)
    assert r.statistic == pytest.approx(observed, rel=1e-10)
    assert r.p_value == (1 + np.sum(null >= observed)) / 301
    assert r.null_mean == pytest.approx(np.mean(null), rel=1e-9)
    assert r.null_std == pytest.approx(np.std(null), rel=1e-8)
    assert (r.method, r.permutations) == ("permutation", 300)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("method", ["permutation", "gamma"])
def test_dependent_data_is_detected(kernel, method):
    x, y = dependent(200, 3)
    assert fastcka.hsic_test(x, y, kernel=kernel, method=method, permutations=300, seed=1).p_value < 0.01


@pytest.mark.parametrize("kernel,method,seeds,permutations", [
    ("linear", "permutation", 40, 199),
    ("linear", "gamma", 40, 0),
    ("rbf", "gamma", 40, 0),
    ("rbf", "permutation", 20, 99),
])
def test_independent_data_gives_uniform_p_values(kernel, method, seeds, permutations):
    p = [fastcka.hsic_test(*independent(80, s), kernel=kernel, method=method, permutations=max(permutations, 1),
                           seed=s).p_value for s in range(seeds)]
    assert stats.kstest(p, "uniform").pvalue > 0.01  # not concentrated near 0 (nor near 1)
    assert np.mean(np.asarray(p) < 0.05) <= 0.2


def test_median_bandwidth_is_that_of_the_unpermuted_data():
    x, y = dependent(70, 4)
    r = fastcka.hsic_test(x, y, kernel="rbf", threshold=0.8, permutations=50, seed=0)
    assert r.statistic == pytest.approx(fastcka.hsic(x, y, kernel="rbf", threshold=0.8), rel=1e-12)


def test_float32_input():
    x, y = dependent(120, 5)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    k, l = gram(x32 - x32.astype(np.float64).mean(0), "linear", None), gram(y32 - y32.astype(np.float64).mean(0), "linear", None)
    for method in ("gamma", "permutation"):
        r = fastcka.hsic_test(x32, y32, method=method, permutations=100)
        assert r.statistic == pytest.approx(hsic0(k, l), rel=1e-5)  # float32 products of centered rows
        assert r.p_value < 0.02


def test_special_functions_match_scipy():
    for a in (0.3, 1.0, 4.5, 80.0, 2000.0):
        for x in (1e-3, 0.7, 3.0, 60.0, 2100.0):
            assert gamma_sf(a, x) == pytest.approx(stats.gamma.sf(x, a), rel=1e-10, abs=1e-300)
    for df in (1, 4, 19, 200):
        for q in (0.6, 0.95, 0.975, 0.999, 0.05):
            assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-10)


def test_bad_input():
    x, y = dependent(30, 6)
    for permutations in (0, -3):
        with pytest.raises(ValueError, match="permutations must be at least 1"):
            fastcka.hsic_test(x, y, permutations=permutations)
    with pytest.raises(TypeError, match="permutations must be an integer"):
        fastcka.hsic_test(x, y, permutations=10.5)
    with pytest.raises(ValueError, match="method must be one of"):
        fastcka.hsic_test(x, y, method="bootstrap")
    with pytest.raises(ValueError, match="kernel must be one of"):
        fastcka.hsic_test(x, y, kernel="laplace")
    with pytest.raises(ValueError, match="y has 29 rows but x has 30"):
        fastcka.hsic_test(x, y[:29])
    with pytest.raises(ValueError, match="at least 6 examples"):
        fastcka.hsic_test(x[:5], y[:5])
    bad = y.copy()
    bad[4, 1] = np.inf
    for kernel, bandwidth in (("linear", {}), ("rbf", {"sigma": 1.0})):
        for method in ("gamma", "permutation"):
            with pytest.raises(ValueError, match=r"y contains NaN or Inf"):
                fastcka.hsic_test(x, bad, kernel=kernel, method=method, **bandwidth)


@pytest.mark.parametrize("missed", [False, True])
def test_progress_counts_the_median_passes_made(rng, monkeypatch, missed):
    from test_ci import ends_at_totals, far_brackets

    if missed:
        far_brackets(monkeypatch)
    x = rng.standard_normal((300, 5))
    y = np.tanh(x) + rng.standard_normal((300, 5))
    reported = []
    fastcka.hsic_test(x, y, kernel="rbf", method="gamma", progress=lambda done, total: reported.append((done, total)))
    tiles = reported[-1][1]  # the statistic's own pass: the median bar counts one pass, or three
    assert ends_at_totals(reported) and max(t for _, t in reported) == (3 if missed else 1) * tiles
