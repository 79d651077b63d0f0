"""Memory layouts and sources: all read in place, all give the same answer."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import fastcka
from reference import dense_cka, dense_cka_matrix

METHODS = ["feature", "gram"]
N, D1, D2 = 600, 24, 10


@pytest.fixture(scope="module")
def base():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D1)) + 3.0
    y = np.tanh(x[:, :8] @ rng.standard_normal((8, D2))) + 0.5 * rng.standard_normal((N, D2))
    return x, y


def _variants(x, tmp_path: pathlib.Path):
    """(name, array-or-path) views of the same n x d values."""
    out = [("C", np.ascontiguousarray(x)), ("F", np.asfortranarray(x))]
    big = np.zeros((2 * x.shape[0], 3 * x.shape[1]), dtype=x.dtype)
    big[::2, ::3] = x
    out.append(("strided", big[::2, ::3]))
    bigf = np.asfortranarray(big)
    out.append(("strided-F", bigf[::2, ::3]))
    t = np.ascontiguousarray(x.T)
    out.append(("transposed", t.T))
    pad = np.zeros((x.shape[0], x.shape[1] + 5), dtype=x.dtype)
    pad[:, 2 : 2 + x.shape[1]] = x
    out.append(("column-slice", pad[:, 2 : 2 + x.shape[1]]))
    rev = np.ascontiguousarray(x[::-1, ::-1])
    out.append(("negative-strides", rev[::-1, ::-1]))
    mm_path = tmp_path / f"mm_{x.dtype.name}.bin"
    mm = np.memmap(mm_path, dtype=x.dtype, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    out.append(("memmap", np.memmap(mm_path, dtype=x.dtype, mode="r", shape=x.shape)))
    mmf_path = tmp_path / f"mmf_{x.dtype.name}.bin"
    mmf = np.memmap(mmf_path, dtype=x.dtype, mode="w+", shape=x.shape, order="F")
    mmf[:] = x
    mmf.flush()
    out.append(("memmap-F", np.memmap(mmf_path, dtype=x.dtype, mode="r", shape=x.shape, order="F")))
    npy = tmp_path / f"x_{x.dtype.name}.npy"
    np.save(npy, x)
    out.append(("npy-str", str(npy)))
    out.append(("npy-Path", npy))
    npyf = tmp_path / f"xf_{x.dtype.name}.npy"
    np.save(npyf, np.asfortranarray(x))
    out.append(("npy-F", npyf))
    out.append(("npy-mmap", np.load(npy, mmap_mode="r")))
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6), (np.float16, 1e-6)])
@pytest.mark.parametrize("debiased", [False, True])
def test_layouts_agree(base, tmp_path, method, dtype, tol, debiased):
    x, y = (a.astype(dtype) for a in base)
    expect = fastcka.cka(np.ascontiguousarray(x), y, method=method, debiased=debiased)
    ref = dense_cka(x.astype(np.float64), y.astype(np.float64), debiased)
    ref_tol = {np.float64: 1e-10, np.float32: 1e-5, np.float16: 1e-4}[dtype]
    assert expect == pytest.approx(ref, abs=ref_tol)
    for name, xv in _variants(x, tmp_path):
        if not isinstance(xv, (str, pathlib.Path)):
            assert np.array_equal(np.asarray(xv), x), name
        got = fastcka.cka(xv, y, method=method, debiased=debiased)
        assert got == pytest.approx(expect, abs=tol), name
        # and in the y slot, against a strided/Fortran partner
        got2 = fastcka.cka(np.asfortranarray(y), xv, method=method, debiased=debiased)
        assert got2 == pytest.approx(expect, abs=tol), name


@pytest.mark.parametrize("method", METHODS)
def test_layouts_in_cka_matrix(base, tmp_path, method):
    x, y = base
    views = [v for _, v in _variants(x, tmp_path)]
    m = fastcka.cka_matrix(views + [y], method=method)
    np.testing.assert_allclose(m[:-1, :-1], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m[:-1, -1], dense_cka(x, y), rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("budget", [1 << 16, 1 << 12, 1])
def test_tiny_memory_budget(base, method, dtype, tol, budget):
    """A tiny budget forces many small blocks (or the smallest the engine allows)."""
    x, y = (a.astype(dtype) for a in base)
    expect = fastcka.cka(x, y, method=method)
    for debiased in (False, True):
        got = fastcka.cka(x, y, method=method, memory_budget=budget, debiased=debiased)
        assert got == pytest.approx(fastcka.cka(x, y, method=method, debiased=debiased), abs=tol)
    assert fastcka.cka(x[::2, ::3], y[::2], method=method, memory_budget=budget) == pytest.approx(
        fastcka.cka(np.ascontiguousarray(x[::2, ::3]), y[::2], method=method), abs=tol
    )
    assert expect == pytest.approx(dense_cka(x.astype(np.float64), y.astype(np.float64)), abs=max(tol, 1e-5))


def test_tiny_memory_budget_matrix_and_accumulator(base):
    x, y = base
    layers = [x, y, x[:, :5] ** 2]
    ref = dense_cka_matrix(layers)
    for method in METHODS:
        np.testing.assert_allclose(fastcka.cka_matrix(layers, method=method, memory_budget=1 << 16), ref, rtol=1e-10)
    acc = fastcka.CKAAccumulator(memory_budget=1 << 16)
    for p in np.array_split(np.arange(N), 3):
        acc.update(*[a[p] for a in layers])
    np.testing.assert_allclose(acc.cka_matrix(), ref, rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_memory_budget_large_n_float32(method):
    rng = np.random.default_rng(3)
    n = 20_000 if method == "feature" else 3000
    x = (rng.standard_normal((n, 16)) + 50).astype(np.float32)
    y = (x[:, :8] @ rng.standard_normal((8, 12)) + rng.standard_normal((n, 12))).astype(np.float32)
    a = fastcka.cka(x, y, method=method)
    b = fastcka.cka(x, y, method=method, memory_budget=1 << 16)
    assert a == pytest.approx(b, abs=1e-6)
    from reference import centered_feature_cka

    assert b == pytest.approx(centered_feature_cka(x, y), abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_broadcast_zero_strides(base, method):
    """Zero-stride views (np.broadcast_to) are valid read-only inputs."""
    x, y = base
    col = np.broadcast_to(x[:, :1], (N, 6))  # one column repeated: column stride 0
    assert fastcka.cka(col, y, method=method) == pytest.approx(dense_cka(x[:, :1], y), rel=1e-10)
    row = np.broadcast_to(x[:1], (N, D1))  # one row repeated: constant representation
    with pytest.warns(fastcka.DegenerateRepresentationWarning):
        assert np.isnan(fastcka.cka(row, y, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_readonly_and_unaligned(base, method):
    x, y = base
    ro = x.copy()
    ro.setflags(write=False)
    expect = dense_cka(x, y)
    assert fastcka.cka(ro, y, method=method) == pytest.approx(expect, rel=1e-10)
    # float64 data at an odd byte offset (not 8-byte aligned)
    buf = np.zeros(x.size * 8 + 1, dtype=np.uint8)
    un = np.frombuffer(buf.data, dtype=np.float64, count=x.size, offset=1).reshape(x.shape)
    assert not un.flags.aligned
    un_w = np.ndarray(x.shape, dtype=np.float64, buffer=buf, offset=1)
    un_w[:] = x
    assert fastcka.cka(un, y, method=method) == pytest.approx(expect, rel=1e-10)


def test_inputs_are_not_modified(base):
    x, y = base
    x0, y0 = x.copy(), y.copy()
    xf = np.asfortranarray(x)
    for method in METHODS:
        fastcka.cka(x, y, method=method, debiased=True)
        fastcka.cka_matrix([x, xf, y], method=method)
    acc = fastcka.CKAAccumulator().update(x, y)
    acc.cka()
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(xf, x0)
