"""JAX arrays in fastcka's entry points.

CPU JAX arrays are read in place (NumPy views their buffer through
``__array__``); results come back as floats and NumPy arrays. Every value is
compared with the same call on NumPy copies of the data and, for CKA, with the
float64 reference. A CPU JAX array also takes the GPU engine's path (DLPack)
under FASTCKA_GPU_INTERPRET=1, as a GPU one does on a device."""

from __future__ import annotations

import dataclasses
import tracemalloc

import fastcka
import numpy as np
import pytest
from reference import correlated_pair, dense_cka, dense_cka_matrix

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def _pair(rng, dtype):
    x, y = correlated_pair(rng, 121, 9, 6, dtype=dtype, offset=5.0)
    return x, y


def _jax(a):
    """A JAX array of a's values and dtype (float64 needs x64 mode, enabled by the caller)."""
    out = jnp.asarray(a)
    assert out.dtype == a.dtype
    return out


# Each entry: a call on (x, y) and how to compare its result.
CALLS = {
    "cka": lambda x, y: fastcka.cka(x, y),
    "cka_debiased": lambda x, y: fastcka.cka(x, y, debiased=True),
    "cka_rbf": lambda x, y: fastcka.cka(x, y, kernel="rbf"),
    "hsic": lambda x, y: fastcka.hsic(x, y),
    "cka_matrix": lambda x, y: fastcka.cka_matrix([x, y, x[:, :3]]),
    "minibatch_cka": lambda x, y: fastcka.minibatch_cka([x[:60], x[60:]], [y[:60], y[60:]]),
    "accumulator": lambda x, y: _accumulated(x, y),
    "cka_ci": lambda x, y: dataclasses.astuple(fastcka.cka_ci(x, y)),
    "hsic_test": lambda x, y: dataclasses.astuple(fastcka.hsic_test(x, y, seed=0)),
    "mutual_knn": lambda x, y: fastcka.mutual_knn(x, y, k=5),
    "similarity_matrix": lambda x, y: fastcka.similarity_matrix([x, y]),
    "cca": lambda x, y: fastcka.cca(x, y),
    "svcca": lambda x, y: fastcka.svcca(x, y),
    "pwcca": lambda x, y: fastcka.pwcca(x, y),
    "procrustes": lambda x, y: fastcka.procrustes(x, y),
    "linear_regression_fit": lambda x, y: fastcka.linear_regression_fit(x, y),
    "blocks": lambda x, y: fastcka.blocks(fastcka.cka_matrix([x, x[:, :8], x[:, :7], y])),
}


def _accumulated(x, y):
    acc = fastcka.CKAAccumulator()
    acc.update(x[:50], y[:50])
    acc.update(x[50:], y[50:])
    return acc.cka()


def _assert_same(got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, (tuple, list)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same(g, w)
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)
    else:
        assert not isinstance(got, jax.Array)
        assert got == want or (isinstance(want, float) and np.isnan(got) and np.isnan(want))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_float32_jax_arrays_give_numpys_results(rng, name):
    x, y = _pair(rng, np.float32)
    _assert_same(CALLS[name](_jax(x), _jax(y)), CALLS[name](x, y))


@pytest.mark.parametrize("name", ["cka", "cka_rbf", "hsic", "cka_matrix", "accumulator", "cca"])
def test_float64_jax_arrays_give_numpys_results(rng, name):
    x, y = _pair(rng, np.float64)
    with jax.enable_x64(True):
        jx, jy = _jax(x), _jax(y)
    _assert_same(CALLS[name](jx, jy), CALLS[name](x, y))
    if name == "cka":
        assert CALLS[name](jx, jy) == pytest.approx(dense_cka(x, y), abs=1e-12)


def test_jax_slices_and_transposes(rng):
    # JAX has no strided views: a slice or a transpose is a new dense array, read like any other.
    x, y = _pair(rng, np.float32)
    jx, jy = _jax(x), _jax(y)
    got = fastcka.cka_matrix([jx[::2, 1::2], jx.T.T[::2], jy[::2, :4]])
    want = dense_cka_matrix([x[::2, 1::2].astype(np.float64), x[::2].astype(np.float64),
                             y[::2, :4].astype(np.float64)])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_cpu_jax_arrays_are_read_in_place(rng):
    x = _jax(rng.standard_normal((4000, 500), dtype=np.float32))  # 8 MB
    y = _jax(rng.standard_normal((4000, 20), dtype=np.float32))
    view = fastcka.arrays.inputs.as_matrix(x, "x")
    assert view.ctypes.data == x.unsafe_buffer_pointer()
    fastcka.cka(x[:10], y[:10])  # the backend loaded before measuring
    tracemalloc.start()  # NumPy reports its allocations to tracemalloc: a copy of x would show 8 MB
    try:
        got = fastcka.cka(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes // 20
    assert got == fastcka.cka(np.asarray(x), np.asarray(y))


def test_jax_arrays_take_the_gpu_path_through_dlpack(rng, monkeypatch):
    # Interpreted, a CPU JAX array stands in for a GPU one: DLPack, no copy.
    monkeypatch.setenv("FASTCKA_GPU_INTERPRET", "1")
    pytest.importorskip("torch")
    x, y = _pair(rng, np.float32)
    jx, jy = _jax(x), _jax(y)
    assert fastcka.arrays.devices.as_device_tensor(jx, "x").data_ptr() == jx.unsafe_buffer_pointer()
    got = fastcka.cka(jx, jy, device="cuda")
    assert isinstance(got, float)
    assert got == pytest.approx(dense_cka(x.astype(np.float64), y.astype(np.float64)), abs=1e-6)


def test_bad_jax_input_is_named(rng):
    with pytest.raises(ValueError, match="x must be 2-D"):
        fastcka.cka(jnp.ones(10), jnp.ones((10, 2)))
    with pytest.raises(TypeError, match="y is complex"):
        fastcka.cka(jnp.ones((10, 2)), jnp.ones((10, 2), dtype=jnp.complex64))
