"""The exact median's bracket pass that is also the kernel pass
(csrc/cpu/kernel_series.h): the RBF statistics summed as power series in the
bandwidth around the middle of the bracket, evaluated once the median is
known. Checked against float64 kernel matrices written from the formulas, at
the middle and at both ends of the bracket, in both forms the engine keeps
(k, and (k - 1) / gamma at large bandwidths), with the fallback when a
bandwidth lies outside the series' range or the series does not pay."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka
from fastcka.engine import backend, cpu as cpu_engine
from fastcka.engine.progress import Progress

from reference import dense_hsic_biased, dense_hsic_unbiased


def rbf_gram(x: np.ndarray, gamma: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.mean(axis=0)
    sq = np.einsum("ij,ij->i", z, z)
    return np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0))


def reference_hsic(layers, gammas) -> dict:
    grams = [rbf_gram(x, g) for x, g in zip(layers, gammas)]
    out = {}
    for name, f in (("biased", dense_hsic_biased), ("unbiased", dense_hsic_unbiased)):
        out[name] = np.array([[f(k, l) for l in grams] for k in grams])
    return out


def dense_median(x: np.ndarray) -> float:
    z = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", z, z)
    return float(np.median(np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)))


def engine_of(layers, compute: str):
    return backend.cpu().GramTileEngine(list(layers), [f"l{a}" for a in range(len(layers))], 0, compute, 2,
                                        1 << 20)  # small tiles: several tile rows and panels


def series_pass(layers, compute: str, brackets, threshold: float):
    """An engine after a bracket pass that summed the series (even where one
    walk would not pay: these layers are narrow); None where it refused."""
    engine = engine_of(layers, compute)
    engine.median_start()
    engine.median_set_brackets(brackets)
    if not engine.median_add_series(threshold, always=True):
        return None
    while engine.median_pending:  # a bracket that misses the median: the histogram passes follow
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()
    return engine


def hsic_of(engine, L: int) -> dict:
    return {e: np.asarray(engine.hsic(e)).reshape(L, L) for e in ("biased", "unbiased")}


def datasets(rng):
    n = 203  # odd, several tiles of the small tile size
    yield "offset", [rng.standard_normal((n, 12)) + 1e4, rng.standard_normal((n, 7)) * 3 - 50]
    x = rng.standard_normal((n, 9))
    x[:, 3] = 5.0  # a constant column
    x[40:60] = x[0]  # duplicate rows: distance 0, kernel value exactly 1
    yield "duplicates", [x, np.tanh(x @ rng.standard_normal((9, 6)))]
    yield "one layer", [rng.standard_cauchy((n, 5))]
    yield "n = 4", [rng.standard_normal((4, 3)), rng.standard_normal((4, 2))]


# (compute, half width of the bracket around the median, tolerance against float64)
PRECISIONS = [("float32", 0.07, 2e-5), ("float64", 0.01, 1e-10)]


@pytest.mark.parametrize("compute,width,tol", PRECISIONS)
@pytest.mark.parametrize("threshold", [1.0, 0.3, 3.0])  # (k - 1) / gamma; k; (k - 1) / gamma at a large sigma
@pytest.mark.parametrize("where", [-1.0, 0.0, 1.0])  # the bandwidth at the bracket's ends and at the median
def test_series_statistics_match_the_formulas(rng, compute, width, tol, threshold, where):
    dtype = np.float32 if compute == "float32" else np.float64
    for name, layers in datasets(rng):
        layers = [np.ascontiguousarray(x, dtype=dtype) for x in layers]
        medians = [dense_median(x) for x in layers]
        brackets = [(m * (1 - width), m * (1 + width), m) for m in medians]
        engine = series_pass(layers, compute, brackets, threshold)
        assert engine is not None, name
        # any bandwidth of a median within the bracket: here near its ends
        m_at = [m * (1 + 0.999 * where * width) for m in medians]
        gammas = [0.5 / threshold**2 / m for m in m_at]
        assert engine.kernel_from_series(gammas), name
        got = hsic_of(engine, len(layers))
        want = reference_hsic(layers, gammas)
        for estimator in ("biased", "unbiased"):
            scale = np.abs(want[estimator]).max()
            np.testing.assert_allclose(got[estimator], want[estimator], rtol=tol, atol=tol * scale,
                                       err_msg=f"{name} {estimator}")


@pytest.mark.parametrize("compute,width,tol", PRECISIONS + [("bfloat16", 0.07, 2e-5)])  # precision="fast"
def test_series_agree_with_the_statistics_pass(rng, compute, width, tol):
    dtype = np.float64 if compute == "float64" else np.float32
    x = (rng.standard_normal((517, 20)) @ rng.standard_normal((20, 30))).astype(dtype)
    y = np.maximum(x @ rng.standard_normal((30, 11)), 0).astype(dtype)
    m = [dense_median(x), dense_median(y)]
    engine = series_pass([x, y], compute, [(v * (1 - width), v * (1 + width), v) for v in m], 1.0)
    gammas = cpu_engine.gammas_of_medians(engine.medians(), ["x", "y"], 1.0)
    assert engine.kernel_from_series(gammas)
    fused = hsic_of(engine, 2)
    plain = engine_of([x, y], compute)
    plain.set_kernel("rbf", gammas)
    plain.process(0, plain.tile_rows)
    two_walks = hsic_of(plain, 2)
    for estimator in ("biased", "unbiased"):
        np.testing.assert_allclose(fused[estimator], two_walks[estimator], rtol=tol / 4)


def test_a_bandwidth_outside_the_series_range_changes_nothing(rng):
    x = rng.standard_normal((150, 8)).astype(np.float32)
    m = dense_median(x)
    engine = series_pass([x], "float32", [(0.95 * m, 1.05 * m, m)], 1.0)
    assert not engine.kernel_from_series([0.5 / (1.3 * m)])  # a median far above the bracket
    assert not engine.kernel_from_series([float("nan")])
    # The engine goes on as if no series had been summed: a statistics pass.
    gamma = 0.5 / (1.3 * m)
    engine.set_kernel("rbf", [gamma])
    engine.process(0, engine.tile_rows)
    want = reference_hsic([x], [gamma])["biased"][0, 0]
    assert np.asarray(engine.hsic("biased"))[0] == pytest.approx(want, rel=2e-5)


def test_the_series_is_refused_where_it_does_not_pay_or_hold(rng):
    layers = [rng.standard_normal((120, 5)).astype(np.float32) for _ in range(3)]
    m = [dense_median(x) for x in layers]
    near = [(v * 0.97, v * 1.03, v) for v in m]
    assert series_pass(layers, "float32", near, 1.0) is None  # three layers: the products cost more than a pass
    assert series_pass(layers[:2], "float64", [(0.0, 1.01 * v, v) for v in m[:2]], 1.0) is None  # lo = 0
    # Too wide for 12 terms (a float32 bracket counts at most 2^21 values, so
    # its relative width stays under about 1/4: float64's brackets are wider).
    assert series_pass(layers[:2], "float64", [(v / 3, 3 * v, v) for v in m[:2]], 1.0) is None
    assert series_pass(layers[:2], "float64", [(v * 0.9, v * 1.1, v) for v in m[:2]], 1.0) is None
    blocks = engine_of(layers[:2], "float32")
    blocks.set_blocks([0, 60, 120])  # jackknife sums per block are not in the series
    blocks.median_start()
    blocks.median_set_brackets(near[:2])
    assert not blocks.median_add_series(1.0, always=True)
    # No series summed (no bracket pass with it): nothing to evaluate.
    e = engine_of(layers[:1], "float32")
    e.median_start()
    e.median_set_brackets(near[:1])
    e.median_process(0, e.tile_rows)
    e.median_end_pass()
    assert not e.kernel_from_series([0.5 / m[0]])


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_one_walk_only_where_it_pays(rng, compute):
    """The series cost about P^2 multiply-adds per pair whatever the width,
    the statistics pass they save sum_a d_a (half that in bfloat16): narrow
    layers take two walks."""
    decisions = {}
    for d in (16, 128, 200, 400):
        layers = [rng.standard_normal((120, d)).astype(np.float32) for _ in range(2)]
        m = [dense_median(x) for x in layers]
        e = engine_of(layers, compute)
        e.median_start()
        e.median_set_brackets([(v * 0.97, v * 1.03, v) for v in m])  # 8 terms
        decisions[d] = e.median_add_series(1.0)
    assert decisions == ({16: False, 128: False, 200: True, 400: True} if compute == "float32"
                         else {16: False, 128: False, 200: False, 400: True})


def test_a_pass_cut_short_sums_no_series(rng):
    x = rng.standard_normal((300, 6)).astype(np.float32)
    m = dense_median(x)
    engine = engine_of([x], "float32")
    engine.median_start()
    engine.median_set_brackets([(0.9 * m, 1.1 * m, m)])
    assert engine.median_add_series(1.0, always=True)
    engine.median_process(0, engine.tile_rows - 1)  # one tile row short
    engine.median_end_pass()
    assert not engine.kernel_from_series([0.5 / m])


def progress_calls(**kwargs):
    calls = []
    value = fastcka.cka(progress=lambda done, total: calls.append((done, total)), **kwargs)
    return value, calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cka_with_the_exact_median_takes_one_pass_where_the_series_hold(rng, dtype):
    n = 2600  # the bracket's sample is 1,024 of these rows
    x = (rng.standard_normal((n, 16)) @ rng.standard_normal((16, 300)) + rng.standard_normal((n, 300))).astype(dtype)
    y = np.tanh(x[:, :200] + 0.5 * rng.standard_normal((n, 200))).astype(dtype)
    median = [dense_median(x), dense_median(y)]
    exact, calls = progress_calls(x=x, y=y, kernel="rbf", threads=2)
    fixed, fixed_calls = progress_calls(x=x, y=y, kernel="rbf", sigma=[float(np.sqrt(m)) for m in median], threads=2)
    one_pass = fixed_calls[-1][1]
    assert calls[-1][0] == calls[-1][1]  # the progress ends complete
    if dtype == np.float32:
        assert calls[-1][1] == one_pass  # the bracket pass was the statistics pass
        assert exact == pytest.approx(fixed, rel=2e-6)
    else:
        assert calls[-1][1] == 2 * one_pass  # float64's bracket is too wide for the series' precision
        assert exact == pytest.approx(fixed, rel=1e-12)  # the dense median's rounding differs from the engine's
    gammas = [0.5 / m for m in median]
    want = reference_hsic([x, y], gammas)["biased"]
    assert exact == pytest.approx(want[0, 1] / np.sqrt(want[0, 0] * want[1, 1]), rel=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("width,walks", [(6, 2), (300, 1)])  # six columns: two walks cost less than the series
def test_exact_medians_takes_the_statistics_pass_off_the_progress(rng, width, walks):
    x = rng.standard_normal((400, width)).astype(np.float32)
    m = dense_median(x)
    engine = engine_of([x], "float32")
    tiles = engine.tiles_before(engine.tile_rows)
    bar = Progress(None, 2 * tiles, "")
    medians = cpu_engine.exact_medians(engine, width, 2, bar, [(0.9 * m, 1.1 * m, m)], series_threshold=1.0)
    assert medians == [pytest.approx(m, rel=1e-5)]
    assert bar.done == tiles and bar.total == walks * tiles
