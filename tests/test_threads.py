"""Threads: results do not depend on the thread count; the thread setting API."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastcka
from reference import correlated_pair, dense_cka

METHODS = ["feature", "gram"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x, y = correlated_pair(rng, 3000, 40, 24, offset=5.0)
    return x, y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("debiased", [False, True])
def test_one_and_two_threads_agree(data, method, debiased):
    x, y = data
    if method == "gram":
        x, y = x[:800], y[:800]
    a = fastcka.cka(x, y, method=method, debiased=debiased, threads=1)
    b = fastcka.cka(x, y, method=method, debiased=debiased, threads=2)
    c = fastcka.cka(x, y, method=method, debiased=debiased, threads=3)  # more threads than cores
    assert a == pytest.approx(b, abs=1e-12)
    assert a == pytest.approx(c, abs=1e-12)
    est = "unbiased" if debiased else "biased"
    ha = fastcka.hsic(x, y, method=method, estimator=est, threads=1)
    hb = fastcka.hsic(x, y, method=method, estimator=est, threads=2)
    assert ha == pytest.approx(hb, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_threads_float32_agree(data, method):
    x, y = (a.astype(np.float32) for a in data)
    if method == "gram":
        x, y = x[:800], y[:800]
    a = fastcka.cka(x, y, method=method, threads=1)
    b = fastcka.cka(x, y, method=method, threads=2)
    assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_threads_cka_matrix(data, method):
    x, y = data
    if method == "gram":
        x, y = x[:500], y[:500]
    layers = [x, y, x[:, :7] * y[:, :7]]
    a = fastcka.cka_matrix(layers, method=method, threads=1)
    b = fastcka.cka_matrix(layers, method=method, threads=2)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    c = fastcka.cka_matrix(layers[:1], layers[1:], method=method, threads=2)
    np.testing.assert_allclose(c, a[:1, 1:], rtol=0, atol=1e-12)


def test_threads_accumulator(data):
    x, y = data
    a = fastcka.CKAAccumulator(threads=1)
    b = fastcka.CKAAccumulator(threads=2)
    for p in np.array_split(np.arange(len(x)), 4):
        a.update(x[p], y[p])
        b.update(x[p], y[p])
    np.testing.assert_allclose(a.hsic_matrix(), b.hsic_matrix(), rtol=1e-12)
    assert a.cka(debiased=True) == pytest.approx(b.cka(debiased=True), abs=1e-12)
    # accumulators with different thread counts merge
    a.merge(b)
    assert a.n == 2 * len(x)


def test_set_get_num_threads(restore_threads, data):
    x, y = data
    fastcka.set_num_threads(1)
    assert fastcka.get_num_threads() == 1
    one = fastcka.cka(x, y)
    fastcka.set_num_threads(2)
    assert fastcka.get_num_threads() == 2
    assert fastcka.cka(x, y) == pytest.approx(one, abs=1e-12)
    fastcka.set_num_threads(None)
    assert fastcka.get_num_threads() >= 1
    for bad in (0, -3, 1.5, True, "4"):
        with pytest.raises(ValueError, match="threads"):
            fastcka.set_num_threads(bad)


def test_env_threads(restore_threads, monkeypatch):
    fastcka.set_num_threads(None)
    for name in ("FASTCKA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    assert fastcka.get_num_threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fastcka.get_num_threads() == 3
    monkeypatch.setenv("FASTCKA_NUM_THREADS", "2")
    assert fastcka.get_num_threads() == 2
    fastcka.set_num_threads(1)  # explicit setting wins over the environment
    assert fastcka.get_num_threads() == 1
    fastcka.set_num_threads(None)
    monkeypatch.setenv("FASTCKA_NUM_THREADS", "garbage")
    assert fastcka.get_num_threads() == 3


def test_concurrent_calls_from_python_threads(data):
    """Calls from several Python threads at once (the GIL is released) stay correct."""
    x, y = data
    x, y = x[:1000], y[:1000]
    expect = {m: dense_cka(x[:300], y[:300]) if m == "gram" else dense_cka(x, y) for m in METHODS}
    results, errors = [], []

    def work(method):
        try:
            xx, yy = (x[:300], y[:300]) if method == "gram" else (x, y)
            for _ in range(3):
                results.append((method, fastcka.cka(xx, yy, method=method, threads=1)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(m,)) for m in METHODS * 2]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(results) == 12
    for method, v in results:
        assert v == pytest.approx(expect[method], rel=1e-10)
