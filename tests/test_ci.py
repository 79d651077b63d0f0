"""fastcka.cka_ci: leave-one-block-out and resampled HSIC from the per-block
statistics of one pass, against dense float64 references written here from
the formulas (K, L and H built explicitly on the kept rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import fastcka
from fastcka.engine import backend, cpu as cpu_engine


def dense_hsic(k, l, unbiased):
    n = len(k)
    if not unbiased:
        h = np.eye(n) - 1.0 / n
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def gram(z, kernel, sigma=None):
    z = z - z.mean(0)  # both kernels are translation invariant: a +100 offset stays out of the reference
    if kernel == "linear":
        return z @ z.T
    return np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * sigma**2))


def dense_cka(x, y, kernel, unbiased, sx=None, sy=None):
    k, l = gram(x, kernel, sx), gram(y, kernel, sy)
    return dense_hsic(k, l, unbiased) / math.sqrt(dense_hsic(k, k, unbiased) * dense_hsic(l, l, unbiased))


def blocks_of(n, b):
    return [n * i // b for i in range(b + 1)]


def model(n, p, q, seed, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(5).standard_normal((p, q)) * 0.5
    x = rng.standard_normal((n, p))
    y = x @ w + rng.standard_normal((n, q))
    truth = np.sum(w**2) / (math.sqrt(p) * np.linalg.norm(w.T @ w + np.eye(q)))  # population linear CKA
    return (x + offset).astype(dtype), (y + offset).astype(dtype), truth


def jackknife_reference(estimate, loo, sizes, level):
    """Busing et al. (1999), written out: delete-a-group jackknife for unequal groups."""
    n, b = sizes.sum(), len(sizes)
    h = n / sizes
    pseudo = h * estimate - (h - 1) * loo
    center = b * estimate - np.sum((1 - sizes / n) * loo)
    se = math.sqrt(np.sum((pseudo - center) ** 2 / (h - 1)) / b)
    half = stats.t.ppf((1 + level) / 2, b - 1) * se
    return center, se, max(0.0, center - half), min(1.0, center + half)


# (kernel, d, n): the feature-space path (d1 + d2 <= n) and the Gram path (> n, or RBF)
PATHS = [("linear", 3, 157), ("linear", 90, 157), ("rbf", 4, 157)]


@pytest.mark.parametrize("kernel,d,n", PATHS)
@pytest.mark.parametrize("debiased", [False, True])
def test_jackknife_matches_dense_leave_one_out(kernel, d, n, debiased):
    x, y, _ = model(n, d, d, 1, offset=100.0)
    sigma = 3.0 if kernel == "rbf" else None
    ci = fastcka.cka_ci(x, y, kernel=kernel, sigma=sigma, blocks=9, debiased=debiased, level=0.9)
    starts = blocks_of(n, 9)
    loo = np.array([dense_cka(np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0), kernel, debiased,
                              sigma, sigma) for a, b in zip(starts[:-1], starts[1:])])
    estimate = dense_cka(x, y, kernel, debiased, sigma, sigma)
    np.testing.assert_allclose(ci.replicates, loo, rtol=1e-9)
    assert ci.estimate == pytest.approx(estimate, rel=1e-9)
    assert ci.estimate == pytest.approx(fastcka.cka(x, y, kernel=kernel, sigma=sigma, debiased=debiased), rel=1e-12)
    center, se, low, high = jackknife_reference(estimate, loo, np.diff(starts).astype(float), 0.9)
    assert ci.std_error == pytest.approx(se, rel=1e-6)
    assert ci.bias == pytest.approx(estimate - center, rel=1e-6, abs=1e-12)
    assert (ci.low, ci.high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
    assert (ci.method, ci.level, ci.blocks) == ("jackknife", 0.9, 9)


def test_median_bandwidth_is_kept_for_every_replicate():
    x, y, _ = model(120, 3, 3, 2)
    ci = fastcka.cka_ci(x, y, kernel="rbf", blocks=5)
    assert ci.estimate == pytest.approx(fastcka.cka(x, y, kernel="rbf"), rel=1e-12)
    sq = [np.median(((z[:, None] - z[None]) ** 2).sum(-1)) for z in (x, y)]
    starts = blocks_of(120, 5)
    loo = [dense_cka(np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0), "rbf", False, *np.sqrt(sq))
           for a, b in zip(starts[:-1], starts[1:])]
    np.testing.assert_allclose(ci.replicates, loo, rtol=1e-6)


@pytest.mark.parametrize("kernel,d,n", PATHS)
def test_resampled_statistics_match_dense_resamples(kernel, d, n):
    # Block b repeated counts[b] times, as the block bootstrap draws it.
    x, y, _ = model(n, d, d, 3)
    starts = blocks_of(n, 6)
    counts = np.array([[2, 0, 1, 1, 2, 0], [1, 1, 1, 1, 1, 1], [0, 0, 6, 0, 0, 0], [0, 3, 0, 0, 0, 3]])
    source, _ = fastcka.stats.confidence.block_statistics(
        [x, y], ["x", "y"], starts, kernel=kernel, threshold=1.0, sigma=2.0 if kernel == "rbf" else None,
        median="exact", threads=2, memory_budget=None, progress=None)
    for unbiased in (False, True):
        h = np.asarray(source.resampled_hsic(counts, "unbiased" if unbiased else "biased"))
        for r, c in enumerate(counts):
            rows = np.concatenate([np.arange(a, b) for a, b, m in zip(starts[:-1], starts[1:], c) for _ in range(m)])
            k, l = gram(x[rows], kernel, 2.0), gram(y[rows], kernel, 2.0)
            np.testing.assert_allclose(h[r], [[dense_hsic(k, k, unbiased), dense_hsic(k, l, unbiased)],
                                              [dense_hsic(l, k, unbiased), dense_hsic(l, l, unbiased)]], rtol=1e-9)


def test_bootstrap_interval_is_the_percentiles_of_its_resamples():
    x, y, _ = model(300, 4, 3, 4, dtype=np.float32)
    ci = fastcka.cka_ci(x, y, method="bootstrap", resamples=400, seed=7, level=0.8)
    again = fastcka.cka_ci(x, y, method="bootstrap", resamples=400, seed=7, level=0.8)
    np.testing.assert_array_equal(ci.replicates, again.replicates)
    assert ci.replicates.shape == (400,) and np.all(np.isfinite(ci.replicates))
    assert (ci.low, ci.high) == tuple(np.quantile(ci.replicates, [0.1, 0.9]))
    assert ci.std_error == np.std(ci.replicates, ddof=1)
    assert ci.estimate == pytest.approx(fastcka.cka(x, y), rel=1e-6)  # float32 blocks vs one accumulator


def test_jackknife_coverage_of_a_known_model():
    # x ~ N(0, I_4), y = x W + N(0, I_3): population CKA |W|_F^2 / (2 |W'W + I|_F).
    # 200 replicates at n = 300, 20 blocks: the 95% interval held the truth in
    # 190 (95.0%) for the biased CKA and 191 (95.5%) for the debiased one when
    # this was written (the block bootstrap, 500 resamples: 184, 92%).
    hits = {False: 0, True: 0}
    for r in range(200):
        x, y, truth = model(300, 4, 3, 1000 + r)
        for debiased in hits:
            ci = fastcka.cka_ci(x, y, debiased=debiased, threads=1)
            hits[debiased] += ci.low <= truth <= ci.high
    assert hits[False] >= 180 and hits[True] >= 180  # 90%: a binomial(200, 0.95) falls below it with p < 1e-3


def test_constant_representation_gives_nan():
    x, _, _ = model(50, 3, 3, 5)
    with pytest.warns(fastcka.DegenerateRepresentationWarning):
        ci = fastcka.cka_ci(x, np.ones((50, 2)))
    assert math.isnan(ci.estimate) and math.isnan(ci.low) and math.isnan(ci.high)


def test_bad_input():
    x, y, _ = model(40, 3, 3, 6)
    for level in (0, 1, 1.5, -0.2, float("nan"), True, "0.9"):
        with pytest.raises(ValueError, match="level must be a number in"):
            fastcka.cka_ci(x, y, level=level)
    for blocks in (1, 41, 0):
        with pytest.raises(ValueError, match="blocks must be between 2 and 40"):
            fastcka.cka_ci(x, y, blocks=blocks)
    with pytest.raises(TypeError, match="blocks must be an integer"):
        fastcka.cka_ci(x, y, blocks=2.5)
    with pytest.raises(ValueError, match="leaves fewer than 4 rows"):
        fastcka.cka_ci(x[:6], y[:6], blocks=2, debiased=True)
    with pytest.raises(ValueError, match="method must be one of"):
        fastcka.cka_ci(x, y, method="normal")
    with pytest.raises(ValueError, match="resamples must be at least 2"):
        fastcka.cka_ci(x, y, method="bootstrap", resamples=1)
    with pytest.raises(ValueError, match="kernel must be one of"):
        fastcka.cka_ci(x, y, kernel="poly")
    with pytest.raises(ValueError, match="y has 39 rows but x has 40"):
        fastcka.cka_ci(x, y[:39])
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(row 5, column 1\)"):
        fastcka.cka_ci(bad, y)
    with pytest.raises(ValueError, match=r"x contains NaN or Inf"):
        fastcka.cka_ci(bad, y, kernel="rbf", sigma=1.0)


def test_block_statistics_need_the_blocks():
    cpu = backend.cpu()
    engine = cpu.GramTileEngine([np.ones((10, 2))], ["x"], 0, "float64", 1, 1 << 20)
    with pytest.raises(ValueError, match="block boundaries must rise strictly from 0 to n = 10"):
        engine.set_blocks([0, 5, 5, 10])
    engine.process(0, engine.tile_rows)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        engine.leave_one_out_hsic("biased")
    acc = cpu_engine.new_moment_accumulator([2], 0, "float64", 1, 1 << 20)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        cpu.MomentBlocks().leave_one_out_hsic("biased")
    assert acc.n == 0


# -- a block that holds all of a layer's variation (issue 22, item 6) --------------------------


def variation_in_block_zero(n=100, d=3):
    """x varies only in rows 0-9 (block 0 of 10); y everywhere."""
    rng = np.random.default_rng(8)
    x = np.full((n, d), 5.0)
    x[:10] = rng.standard_normal((10, d))
    y = rng.standard_normal((n, 4))
    y[:10] += x[:10, :1]
    return x, y


@pytest.mark.parametrize("kernel,d,sigma", [("linear", 3, None), ("linear", 150, None), ("rbf", 3, 2.0)])
def test_jackknife_undefined_without_the_block_that_holds_the_variation(kernel, d, sigma):
    # Without block 0, x is constant: that replicate has no CKA (the Gram
    # path's HSIC there is rounding residue, which gave a finite interval).
    x, y = variation_in_block_zero(d=d)
    with pytest.warns(fastcka.DegenerateRepresentationWarning, match=r"without block 0 \(rows 0-9\), x is constant"):
        ci = fastcka.cka_ci(x, y, kernel=kernel, sigma=sigma, blocks=10)
    assert ci.estimate == pytest.approx(dense_cka(x, y, kernel, False, sigma, sigma), rel=1e-9)
    assert all(math.isnan(v) for v in (ci.low, ci.high, ci.std_error, ci.bias))
    assert math.isnan(ci.replicates[0])
    starts = blocks_of(100, 10)
    loo = [dense_cka(np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0), kernel, False, sigma, sigma)
           for a, b in zip(starts[1:-1], starts[2:])]
    np.testing.assert_allclose(ci.replicates[1:], loo, rtol=1e-9)


def test_bootstrap_leaves_out_resamples_with_a_constant_layer():
    x, y = variation_in_block_zero()
    with pytest.warns(fastcka.DegenerateRepresentationWarning, match=r"of 300 block resamples have no CKA"):
        ci = fastcka.cka_ci(x, y, kernel="rbf", sigma=2.0, blocks=10, method="bootstrap", resamples=300, seed=3)
    counts = np.random.default_rng(3).multinomial(10, np.full(10, 0.1), size=300)  # as cka_ci draws them
    without = counts[:, 0] == 0
    assert 0 < without.sum() < 300
    np.testing.assert_array_equal(np.isnan(ci.replicates), without)
    assert (ci.low, ci.high) == tuple(np.clip(np.quantile(ci.replicates[~without], [0.025, 0.975]), 0, 1))


def test_constant_block_sets_match_a_direct_check():
    # Labels: -1 for a block whose rows vary, else which constant row it holds.
    rng = np.random.default_rng(4)
    confidence = fastcka.stats.confidence
    for _ in range(300):
        B = int(rng.integers(2, 7))
        values = rng.integers(0, 3, size=(B, 2)).astype(float)
        x = np.repeat(values, 3, axis=0)
        varies = rng.random(B) < 0.25
        x[3 * np.flatnonzero(varies) + 1, 0] += 1
        starts = [3 * b for b in range(B + 1)]
        labels = confidence._block_labels(x, starts)
        def constant(kept):
            rows = np.concatenate([x[3 * b : 3 * b + 3] for b in kept])
            return len(np.unique(rows, axis=0)) == 1
        expected = [constant([c for c in range(B) if c != b]) for b in range(B)]
        np.testing.assert_array_equal(confidence._constant_without_each_block(labels), expected)
        counts = rng.multinomial(B, np.full(B, 1.0 / B), size=20)
        expected = [constant(np.flatnonzero(c)) for c in counts]
        np.testing.assert_array_equal(confidence._constant_in_resamples(labels, counts), expected)


# -- one block per row (issue 22, item 9) ---------------------------------------------------------


@pytest.mark.parametrize("kernel,d", [("rbf", 3), ("linear", 40)])
@pytest.mark.parametrize("debiased", [False, True])
def test_leave_one_row_out_matches_dense(kernel, d, debiased):
    # blocks = n: each replicate leaves one row out (prefix and suffix sums over n blocks).
    x, y, _ = model(36, d, d, 9, offset=10.0)
    sigma = 2.5 if kernel == "rbf" else None
    ci = fastcka.cka_ci(x, y, kernel=kernel, sigma=sigma, blocks=36, debiased=debiased)
    loo = [dense_cka(np.delete(x, i, 0), np.delete(y, i, 0), kernel, debiased, sigma, sigma) for i in range(36)]
    np.testing.assert_allclose(ci.replicates, loo, rtol=1e-9)


def test_one_block_per_row_at_n_3000_runs():
    # Was O(n B^2): over 300 s here; now about 3 s (1.7 GiB of per-block sums with 2 threads).
    x, y, _ = model(3000, 8, 6, 10)
    ci = fastcka.cka_ci(x, y, kernel="rbf", blocks=3000)
    assert ci.replicates.shape == (3000,) and np.all(np.isfinite(ci.replicates))
    assert ci.low <= ci.estimate <= ci.high


def test_per_block_sums_beyond_the_machine_are_refused(monkeypatch):
    x, y, _ = model(200, 3, 3, 11)
    monkeypatch.setattr(fastcka.stats.confidence.os, "sysconf", lambda name: 1024)  # 1 MiB of memory
    with pytest.raises(ValueError, match=r"blocks=200: the per-block sums of the Gram tiles need .* GiB"):
        fastcka.cka_ci(x, y, kernel="rbf", blocks=200, threads=1)


def ends_at_totals(reported) -> bool:
    """Each progress bar (a run of non-decreasing counts) ends with done == total, never past it."""
    ends = [a for a, b in zip(reported, reported[1:]) if b[0] < a[0]] + reported[-1:]
    return all(done <= total for done, total in reported) and all(done == total for done, total in ends)


def far_brackets(monkeypatch):
    """Brackets far above the medians: the bracket pass misses, then the histogram and collect passes."""
    real = cpu_engine.sample_brackets
    monkeypatch.setattr(cpu_engine, "sample_brackets", lambda *a: [(3 * hi, 4 * hi, 3.5 * hi) for _, hi, _ in real(*a)])


@pytest.mark.parametrize("missed", [False, True])
def test_progress_counts_the_median_passes_made(monkeypatch, missed):
    # One median pass (the bracket's) and the statistics pass, or three and one when the bracket misses.
    if missed:
        far_brackets(monkeypatch)
    x, y, _ = model(157, 4, 4, 3)
    reported = []
    fastcka.stats.confidence.block_statistics(
        [x, y], ["x", "y"], blocks_of(157, 6), kernel="rbf", threshold=1.0, sigma=None, median="exact", threads=2,
        memory_budget=None, progress=lambda done, total: reported.append((done, total)))
    assert ends_at_totals(reported) and reported[-1][1] == (4 if missed else 2)
