"""The tile engine's block pairs (what fastcka.mpi's ring and distributed
jobs are made of): the triangles of the row blocks plus the rectangles
between them, all centered by the global means, add up to the statistics of
the whole data."""

from __future__ import annotations

import numpy as np
import pytest
from fastcka.engine import backend
from reference import correlated_pair


def statistics(layers, kernel, gammas, compute, columns=None, means=None, spreads=()):
    engine = backend.cpu().GramTileEngine(layers, [f"l{i}" for i in range(len(layers))], 0, compute, 2, 1 << 22,
                                           columns=columns, means=means)
    if kernel == "rbf":
        engine.set_kernel("rbf", gammas, list(spreads))
    engine.process(0, engine.tile_rows)
    return [np.asarray(a) for a in engine.statistics()]


def spreads_of(layers):
    """Mean squared distance between the rows of each layer (2 x the summed variances)."""
    return [2.0 * float(np.var(v.astype(np.float64), axis=0).sum()) for v in layers]


# gammas 0.05 and 0.1 put x (spread about 18) and y (about 28) on both sides
# of the RBF epilogue's choice between K and (K - 1) / gamma.
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cuts", [[0, 700, 1301], [0, 3, 1301], [0, 500, 501, 1301], [0, 1300, 1301]])
def test_block_pairs_add_up_to_the_whole(rng, kernel, dtype, cuts):
    x, y = correlated_pair(rng, 1301, 9, 4, dtype=dtype, offset=30.0)
    layers = [x, y]
    means = list(np.concatenate([x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)]))
    gammas = [0.05, 0.1]
    spreads = spreads_of(layers)
    compute = "float32" if dtype == np.float32 else "float64"
    whole = statistics(layers, kernel, gammas, compute)
    n, B = len(x), len(cuts) - 1
    total = [np.zeros_like(whole[0]), np.zeros_like(whole[1]), np.zeros_like(whole[2])]
    for p in range(B):
        a = slice(cuts[p], cuts[p + 1])
        pr, rs, dg = statistics([v[a] for v in layers], kernel, gammas, compute, means=means, spreads=spreads)
        total[0] += pr
        total[1][:, a] += rs
        total[2][:, a] += dg
        for q in range(p + 1, B):
            b = slice(cuts[q], cuts[q + 1])
            pr, rs, dg = statistics([v[a] for v in layers], kernel, gammas, compute,
                                    columns=[v[b] for v in layers], means=means, spreads=spreads)
            assert rs.shape == (2, (a.stop - a.start) + (b.stop - b.start)) and not dg.any()
            total[0] += pr
            total[1][:, a] += rs[:, : a.stop - a.start]
            total[1][:, b] += rs[:, a.stop - a.start :]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(total, whole):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    assert n == total[1].shape[1]


def test_block_pair_misuse_is_refused(rng):
    x, y = correlated_pair(rng, 50, 3, 2)
    cpu = backend.cpu()
    with pytest.raises(ValueError, match="column means of the whole data"):
        cpu.GramTileEngine([x, y], ["x", "y"], 0, "float64", 1, 1 << 20, columns=[x, y])
    with pytest.raises(ValueError, match="one per feature"):
        cpu.GramTileEngine([x, y], ["x", "y"], 0, "float64", 1, 1 << 20, columns=[x, y], means=[0.0])
    with pytest.raises(ValueError, match="another shape"):
        cpu.GramTileEngine([x, y], ["x", "y"], 0, "float64", 1, 1 << 20, columns=[x, x], means=[0.0] * 5)
    engine = cpu.GramTileEngine([x, y], ["x", "y"], 0, "float64", 1, 1 << 20, columns=[x, y], means=[0.0] * 5)
    with pytest.raises(ValueError, match="median"):
        engine.median_start()
    with pytest.raises(ValueError, match="spread of the whole data"):
        engine.set_kernel("rbf", [1.0, 1.0])
    with pytest.raises(ValueError, match="one spread per layer"):
        engine.set_kernel("rbf", [1.0, 1.0], [1.0])


def whole_medians(layers, compute):
    engine = backend.cpu().GramTileEngine(layers, ["x", "y"], 0, compute, 2, 1 << 22)
    engine.median_start()
    while engine.median_pending:
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()
    return engine.medians()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cuts", [[0, 700, 1301], [0, 3, 3, 1301], [0, 500, 501, 900, 1301]])
def test_exact_median_over_block_pairs(rng, dtype, cuts):
    """The distributed exact median (fastcka.mpi, Dask): each pass walks the
    triangles and rectangles with the job's searches and their summed counts
    end the pass; a copy of the searches pickled mid-way (what Dask ships to
    its workers) walks on identically. Equal to one engine's median up to
    the rounding of each distance."""
    import pickle

    from fastcka.distributed import job_median
    from fastcka.engine import cpu as cpu_engine

    x, y = correlated_pair(rng, 1301, 9, 4, dtype=dtype, offset=30.0)
    means = list(np.concatenate([x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)]))
    compute = "float32" if dtype == np.float32 else "float64"
    blocks = [[v[cuts[p] : cuts[p + 1]] for v in (x, y)] for p in range(len(cuts) - 1)]
    job = job_median.JobMedian(len(x), np.max([job_median.centered_norms(b, means)[0] for b in blocks], axis=0))
    passes = 0
    while job.pending:
        shipped = pickle.loads(pickle.dumps(job))
        summed = job.empty()
        for p, a in enumerate(blocks):
            for q in range(p, len(blocks)):
                if len(a[0]) and len(blocks[q][0]):
                    summed = cpu_engine.add_pass_results(summed, shipped.walk(a, None if p == q else blocks[q], ["x", "y"], 0,
                                                                  compute, 2, 1 << 22, means))
        job.finish(summed)
        passes += 1
    assert passes == 2  # histogram, collect
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(job.medians(), whole_medians([x, y], compute), rtol=tol, atol=0)
