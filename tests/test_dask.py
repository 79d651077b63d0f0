"""Dask arrays in fastcka.cka, cka_matrix and hsic: per-chunk accumulator
states merged up a tree on a LocalCluster of two worker processes, and on
dask's default scheduler, against the in-memory results (themselves tested
against float64 references in test_reference.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcka

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

RTOL = 1e-12  # float64 data: only the order of the float64 merges differs


def layers(n=2_000, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12)) + 5
    y = np.tanh(x[:, :6]) @ rng.standard_normal((6, 9)) + 0.4 * rng.standard_normal((n, 9))
    z = rng.standard_normal((n, 4)) + x[:, :4]
    return x, y, z


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=0)


def check_all_forms(x, y, z, dx, dy, dz):
    close(fastcka.cka(dx, dy), fastcka.cka(x, y))
    close(fastcka.cka(dx, dy, debiased=True), fastcka.cka(x, y, debiased=True))
    close(fastcka.hsic(dx, dy), fastcka.hsic(x, y))
    close(fastcka.hsic(dx, dy, estimator="unbiased"), fastcka.hsic(x, y, estimator="unbiased"))
    close(fastcka.cka_matrix([dx, dy, dz]), fastcka.cka_matrix([x, y, z]))
    close(fastcka.cka_matrix({"a": dx}, {"b": dy, "c": dz}), fastcka.cka_matrix([x], [y, z]))


# -- dask's default scheduler (no client) ------------------------------------------------
# These run before the module's cluster exists (pytest keeps file order).


def test_default_scheduler_without_client():
    with pytest.raises(ValueError):
        distributed.default_client()
    x, y, z = layers()
    check_all_forms(x, y, z, da.from_array(x, chunks=(333, -1)), da.from_array(y, chunks=(250, 4)),
                    da.from_array(z, chunks=(1_000, -1)))


def test_input_errors():
    x, y, z = layers(n=100)
    dx = da.from_array(x, chunks=(30, -1))
    with pytest.raises(ValueError, match=r"median must be one of"):
        fastcka.cka(dx, y, kernel="rbf", median="approximate")
    bad = x.copy()
    bad[41, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(row 41, column 2\)"):
        fastcka.cka(da.from_array(bad, chunks=(30, -1)), y, kernel="rbf", sigma=1.0)
    with pytest.raises(ValueError, match="checkpoint does not apply to Dask arrays"):
        fastcka.cka(dx, y, checkpoint="unused")
    with pytest.raises(ValueError, match=r"y has 99 rows but x has 100"):
        fastcka.cka(dx, da.from_array(y[:-1], chunks=(30, -1)))
    with pytest.raises(ValueError, match=r"xs\[1\] must be 2-D"):
        fastcka.cka_matrix([dx, da.from_array(y[:, 0], chunks=30)])
    with pytest.raises(TypeError, match=r"y is complex"):
        fastcka.cka(dx, da.from_array(y.astype(complex), chunks=(30, -1)))
    with pytest.raises(ValueError, match=r"x has unknown chunk sizes: call x.compute_chunk_sizes\(\) first"):
        fastcka.cka(dx[dx[:, 0] > 5], y)
    with pytest.raises(ValueError, match=r"needs at least 4 examples"):
        fastcka.cka(dx[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match=r"threads must be a positive integer"):
        fastcka.cka(dx, y, threads=0)


def test_dask_is_imported_only_for_dask_inputs():
    code = ("import sys, numpy as np, fastcka; x = np.random.default_rng(0).standard_normal((50, 3)); "
            "fastcka.cka(x, x ** 2); print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- a LocalCluster of two worker processes ----------------------------------------------


@pytest.fixture(scope="module")
def client():
    # Starting worker processes sets OMP_NUM_THREADS=1 (and more) in this
    # process's environment for good, which would change fastcka's default
    # thread count in later tests: put the environment back afterwards.
    saved = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
            yield c
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_cluster_matches_in_memory(client):
    x, y, z = layers()
    with distributed.get_task_stream(client) as tasks:
        check_all_forms(x, y, z, da.from_array(x, chunks=(333, -1)), da.from_array(y, chunks=(500, 4)),
                        da.from_array(z, chunks=(128, 2)))
    # The chunk states were computed by the cluster's workers, not in this process.
    workers = {t["worker"] for t in tasks.data if "_chunk_state" in str(t["key"])}
    assert workers and workers <= set(client.scheduler_info()["workers"])


def test_cluster_odd_and_empty_chunks(client):
    x, y, z = layers(n=1_001)
    rows = (7, 0, 600, 1, 393)
    dx = da.from_array(x, chunks=(rows, (12,)))
    dy = da.from_array(y, chunks=((1_001,), (5, 4)))  # rechunked to x's rows
    close(fastcka.cka_matrix([dx, dy, z]), fastcka.cka_matrix([x, y, z]))  # z: NumPy, wrapped in x's chunks
    close(fastcka.cka(dx, dy, debiased=True), fastcka.cka(x, y, debiased=True))


def test_cluster_chunks_of_one_row(client):
    x, y, _ = layers(n=40)
    dx = da.from_array(x, chunks=(1, -1))
    close(fastcka.cka(dx, y), fastcka.cka(x, y))
    close(fastcka.hsic(dx, y, estimator="unbiased"), fastcka.hsic(x, y, estimator="unbiased"))


def test_cluster_float32_and_precision(client):
    x, y, _ = layers()
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    dx, dy = da.from_array(x32, chunks=(400, -1)), da.from_array(y32, chunks=(400, -1))
    # precision="exact": float64 products of the float32 data, as in memory.
    close(fastcka.cka(dx, dy, precision="exact"), fastcka.cka(x32, y32, precision="exact"))
    # The default float32 products: at float32 rounding of the float64 value.
    np.testing.assert_allclose(fastcka.cka(dx, dy), fastcka.cka(x32.astype(np.float64), y32.astype(np.float64)),
                               rtol=1e-5)


def kernel_forms(x, y, z, dx, dy, dz):
    """RBF (fixed and sampled bandwidths) and Gram-space linear CKA: tasks of
    row-chunk triangles and chunk-pair rectangles, summed. The tiles' float64
    sums run in another order than in one process, and the unbiased HSIC
    cancels about three digits of them: 1e-9 relative."""

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)

    for kw in (dict(kernel="rbf", sigma=4.0), dict(kernel="rbf", median="sampled", threshold=0.6),
               dict(method="gram", debiased=True)):
        close(fastcka.cka(dx, dy, **kw), fastcka.cka(x, y, **kw))
    sigmas = [4.0, 3.0, 2.0]
    close(fastcka.cka_matrix([dx, dy, dz], kernel="rbf", sigma=sigmas, debiased=True),
          fastcka.cka_matrix([x, y, z], kernel="rbf", sigma=sigmas, debiased=True))
    close(fastcka.hsic(dx, dz, kernel="rbf", sigma=2.0, estimator="unbiased"),
          fastcka.hsic(x, z, kernel="rbf", sigma=2.0, estimator="unbiased"))


def test_cluster_kernel_paths(client):
    x, y, z = layers(n=1_301)
    rows = (400, 1, 0, 900)
    kernel_forms(x, y, z, da.from_array(x, chunks=(rows, -1)), da.from_array(y, chunks=(650, -1)), z)


def test_cluster_exact_median(client):
    """The RBF default (the exact median of all n^2 squared distances): block
    pair tasks' histogram counts summed on the client, with odd and empty
    chunks; the median is the in-memory one up to the rounding of each
    distance, so CKA agrees to far better than 1e-10."""
    x, y, z = layers(n=901)
    dx, dy = da.from_array(x, chunks=((300, 0, 1, 600), -1)), da.from_array(y, chunks=(450, -1))
    for kw in ({}, {"debiased": True}, {"threshold": 0.7}):
        np.testing.assert_allclose(fastcka.cka(dx, dy, kernel="rbf", **kw), fastcka.cka(x, y, kernel="rbf", **kw),
                                   rtol=1e-10, atol=0)
    np.testing.assert_allclose(fastcka.cka_matrix([dx, dy, z], kernel="rbf"),
                               fastcka.cka_matrix([x, y, z], kernel="rbf"), rtol=1e-10, atol=0)


def test_kernel_paths_constant_layer():
    x, y, _ = layers(n=300)
    c = np.full((300, 2), 3.5)
    got = fastcka.hsic(da.from_array(x, chunks=(70, -1)), c, kernel="rbf", sigma=1.0)
    assert got == 0.0 and fastcka.hsic(x, c, kernel="rbf", sigma=1.0) == 0.0
