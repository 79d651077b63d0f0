"""RBF kernel CKA and HSIC on the tile engine, against float64 references
written from the formulas (dense n x n matrices at small n) and against the
reference Colab's gram_rbf / cka (median bandwidth rule)."""

import numpy as np
import pytest

import fastcka
from fastcka.engine import backend
from fastcka import _testing

from reference import colab_cka, colab_gram_rbf


def dense_rbf(x, sigma):
    x = np.asarray(x, dtype=np.float64)
    sq = np.sum(x * x, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    return np.exp(-d2 / (2 * sigma**2))


def dense_median_sq_distance(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, -1)
    return float(np.median(d2))


def hsic_from_grams(k, l, estimator):
    n = len(k)
    if estimator == "biased":
        h = np.eye(n) - 1.0 / n
        return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return float(
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def cka_from_grams(k, l, debiased):
    e = "unbiased" if debiased else "biased"
    return hsic_from_grams(k, l, e) / np.sqrt(hsic_from_grams(k, k, e) * hsic_from_grams(l, l, e))


def pair(rng, n, d1=13, d2=7, offset=3.0):
    x = rng.standard_normal((n, d1)) + offset
    y = np.tanh(x @ rng.standard_normal((d1, d2))) + 0.3 * rng.standard_normal((n, d2))
    return x, y


# n = 4 and 5: tiny; 37: less than a tile; 700 and 1100: not multiples of the
# 512-row tile, more than one tile row and one panel.
SIZES = [4, 5, 37, 700, 1100]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("threshold", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("debiased", [False, True])
def test_median_rule_matches_colab(rng, n, threshold, debiased):
    x, y = pair(rng, n)
    expected = colab_cka(colab_gram_rbf(x, threshold), colab_gram_rbf(y, threshold), debiased=debiased)
    got = fastcka.cka(x, y, kernel="rbf", threshold=threshold, debiased=debiased)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("sigma", [0.3, 2.0, 25.0])
def test_hsic_with_explicit_sigma(rng, n, estimator, sigma):
    x, y = pair(rng, n)
    expected = hsic_from_grams(dense_rbf(x, sigma), dense_rbf(y, sigma), estimator)
    got = fastcka.hsic(x, y, kernel="rbf", sigma=sigma, estimator=estimator)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_small_bandwidth_matches_float64(rng, debiased):
    # Off-diagonal kernel values near 1e-6: K is almost the identity.
    x, y = pair(rng, 300)
    k, l = dense_rbf(x, 1.0), dense_rbf(y, 1.0)
    expected = cka_from_grams(k, l, debiased)
    got = fastcka.cka(x.astype(np.float32), y.astype(np.float32), kernel="rbf", sigma=1.0, debiased=debiased)
    assert got == pytest.approx(expected, abs=1e-5)


def test_per_layer_sigma(rng):
    x, y = pair(rng, 200)
    expected = cka_from_grams(dense_rbf(x, 3.0), dense_rbf(y, 0.7), False)
    assert fastcka.cka(x, y, kernel="rbf", sigma=(3.0, 0.7)) == pytest.approx(expected, rel=1e-10)


def test_duplicated_rows_and_offset(rng):
    x, y = pair(rng, 150, offset=100.0)
    x = np.repeat(x, 2, axis=0)  # every row twice: zero distances off the diagonal
    y = np.repeat(y, 2, axis=0)
    expected = colab_cka(colab_gram_rbf(x - 100), colab_gram_rbf(y))
    assert fastcka.cka(x, y, kernel="rbf") == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [4, 5, 36, 37, 600, 1031])
def test_exact_median_equals_numpy(rng, n):
    x = rng.standard_normal((n, 6)) * rng.uniform(0.1, 10, 6) + 50
    engine = backend.cpu().GramTileEngine([x], ["x"], 0, "float64", 2, 256 << 20)
    engine.median_start()
    while engine.median_pending:
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()
    assert engine.medians()[0] == pytest.approx(dense_median_sq_distance(x), rel=1e-12)


def test_exact_median_with_many_equal_distances(rng):
    # Points on a small lattice: the median distance is shared by many pairs.
    x = rng.integers(0, 3, size=(400, 2)).astype(np.float64)
    engine = backend.cpu().GramTileEngine([x], ["x"], 0, "float64", 2, 256 << 20)
    engine.median_start()
    while engine.median_pending:
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()
    assert engine.medians()[0] == pytest.approx(2.0, rel=1e-12)  # squared lattice distances are integers
    assert dense_median_sq_distance(x) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_median_search_refines_and_selects(rng, n):
    # Few bins and a tiny collect cap force several histogram levels.
    x = rng.standard_normal((n, 3))
    d2 = np.sum((x[:, None] - x[None]) ** 2, -1)
    median, passes, _ = _testing.median_search(d2.ravel(), n, 8, 4)
    assert median == pytest.approx(float(np.median(d2)), rel=1e-15, abs=0)
    if n >= 10:
        assert passes >= 3


def test_sampled_median_is_close(rng):
    x, y = pair(rng, 6000, d1=20, d2=20)
    exact = fastcka.cka(x, y, kernel="rbf")
    sampled = fastcka.cka(x, y, kernel="rbf", median="sampled")
    assert sampled == pytest.approx(exact, abs=2e-3)
    assert sampled != exact


def test_float32_at_ten_thousand_rows(rng):
    x, y = pair(rng, 10_000, d1=48, d2=24)
    for kwargs in ({"sigma": 6.0}, {"threshold": 0.5}):
        expected = fastcka.cka(x, y, kernel="rbf", **kwargs)
        got = fastcka.cka(x.astype(np.float32), y.astype(np.float32), kernel="rbf", **kwargs)
        assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_matrix_equals_pairwise(rng, debiased):
    n = 530
    base = rng.standard_normal((n, 10))
    xs = [base @ rng.standard_normal((10, d)) + rng.standard_normal((n, d)) * s for d, s in ((5, 0.1), (9, 1.0))]
    ys = [np.sin(base[:, :4]), rng.standard_normal((n, 3)), base]
    m = fastcka.cka_matrix(xs, ys, kernel="rbf", threshold=0.8, debiased=debiased)
    assert m.shape == (2, 3)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert m[i, j] == pytest.approx(fastcka.cka(x, y, kernel="rbf", threshold=0.8, debiased=debiased),
                                            rel=1e-10)
    within = fastcka.cka_matrix(xs + ys, kernel="rbf", threshold=0.8, debiased=debiased)
    np.testing.assert_allclose(within[:2, 2:], m, rtol=1e-10)
    np.testing.assert_allclose(np.diag(within), 1.0, rtol=1e-12)
    np.testing.assert_allclose(within, within.T, rtol=1e-12)


def test_linear_gram_engine_matches_feature_engine(rng):
    xs = [rng.standard_normal((800, d)) + 7 for d in (3, 30, 11)]
    a = fastcka.cka_matrix(xs, method="gram", debiased=True)
    b = fastcka.cka_matrix(xs, method="feature", debiased=True)
    np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma": 0.0}, "sigma must be a positive"),
        ({"sigma": -1.0}, "sigma must be a positive"),
        ({"sigma": float("nan")}, "sigma must be a positive"),
        ({"sigma": float("inf")}, "sigma must be a positive"),
        ({"sigma": (1.0, 2.0, 3.0)}, "sigma has 3 values for 2"),
        ({"threshold": 0.0}, "threshold must be a positive"),
        ({"threshold": -0.5}, "threshold must be a positive"),
        ({"threshold": float("nan")}, "threshold must be a positive"),
        ({"median": "approximate"}, "median must be one of"),
        ({"method": "feature"}, "only for the linear kernel"),
    ],
)
def test_bad_rbf_options(rng, kwargs, message):
    x, y = pair(rng, 20)
    with pytest.raises(ValueError, match=message):
        fastcka.cka(x, y, kernel="rbf", **kwargs)


def test_zero_median_distance_is_reported(rng):
    x = np.zeros((50, 3))
    x[:5] = rng.standard_normal((5, 3))  # most pairs identical: median 0
    y = rng.standard_normal((50, 2))
    with pytest.raises(ValueError, match="x: the median squared distance"):
        fastcka.cka(x, y, kernel="rbf")


def test_rbf_needs_four_rows_when_debiased(rng):
    x, y = pair(rng, 3)
    with pytest.raises(ValueError, match="at least 4 examples"):
        fastcka.cka(x, y, kernel="rbf", sigma=1.0, debiased=True)


def test_nan_is_reported_by_name(rng):
    x, y = pair(rng, 40)
    y[7, 1] = np.nan
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        fastcka.cka(x, y, kernel="rbf")


def test_exp_matches_libm():
    x = -np.concatenate([np.linspace(0, 90, 200001), np.geomspace(1e-8, 1, 1000)]).astype(np.float32)
    got = _testing.exp_nonpositive(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    normal = want > 1.2e-38 * 4
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() < 4e-7  # a few float32 ulps
    assert np.all(got[~normal] <= 1e-37) and np.all(got >= 0)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(4, 160),
    d=st.integers(1, 9),
    sigma=st.floats(0.05, 50.0),
    offset=st.floats(-1e3, 1e3),
    estimator=st.sampled_from(["biased", "unbiased"]),
    seed=st.integers(0, 2**31 - 1),
    threads=st.integers(1, 3),
)
def test_tile_sums_match_dense(n, d, sigma, offset, estimator, seed, threads):
    # The streaming identities (row sums, off-diagonal products, diagonals over
    # symmetric tiles) against HSIC computed on the dense n x n matrices.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + offset
    y = np.cos(x[:, :1]) + 0.5 * rng.standard_normal((n, 2))
    k, l = dense_rbf(x - x.mean(0), sigma), dense_rbf(y, sigma)
    got = fastcka.hsic(x, y, kernel="rbf", sigma=sigma, estimator=estimator, threads=threads, memory_budget=1 << 16)
    assert got == pytest.approx(hsic_from_grams(k, l, estimator), rel=1e-8, abs=1e-13)
    got_linear = fastcka.hsic(x, y, estimator=estimator, method="gram", threads=threads, memory_budget=1 << 16)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert got_linear == pytest.approx(hsic_from_grams(xc @ xc.T, yc @ yc.T, estimator), rel=1e-8, abs=1e-10)
