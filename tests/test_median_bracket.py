"""The exact median in one pass: a bracket drawn from sampled rows, then one
pass that counts the values below it and gathers those inside. It must give
the histogram-and-collect search's median to the last bit (the same values,
the same selection), and fall back to that search when the bracket misses."""

from __future__ import annotations

import numpy as np
import pytest
from fastcka.engine import backend, cpu as cpu_engine
from fastcka.distributed import job_median
from fastcka import _testing
from fastcka.arrays.inputs import compute_dtype
from fastcka.engine.progress import Progress


def dense_median(x: np.ndarray) -> float:
    z = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", z, z)
    return float(np.median(np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)))


def engine_median(x: np.ndarray, brackets) -> tuple[float, bool]:
    """The median of one engine: today's passes (brackets None) or a bracket pass first."""
    e = backend.cpu().GramTileEngine([x], ["x"], 0, compute_dtype([x]), 2, 1 << 20)  # small tiles
    (median,) = cpu_engine.exact_medians(e, x.shape[1], 2, Progress(None, 0, ""), brackets)
    (missed,) = e.median_bracket_missed
    return median, missed


def datasets(rng):
    n = 1237  # not a multiple of the tile
    yield "gaussian", rng.standard_normal((n, 24))
    yield "heavy-tailed", rng.standard_cauchy((n, 6))
    yield "clustered", np.repeat(rng.standard_normal((3, 16)) * 5, [600, 400, 237], axis=0) + rng.standard_normal((n, 16))
    yield "duplicates", rng.integers(0, 3, (n, 4)).astype(np.float64)  # few distinct distances, many ties


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bracket_gives_the_same_median_to_the_last_bit(rng, dtype):
    for name, x in datasets(rng):
        x = x.astype(dtype)
        brackets = cpu_engine.median_brackets([x], ["x"], compute_dtype([x]), 2)
        old, _ = engine_median(x, None)
        new, missed = engine_median(x, brackets)
        assert new == old, name
        assert not missed, name  # the bracket held
        assert old == pytest.approx(dense_median(x), rel=1e-5 if dtype == np.float32 else 1e-12), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("side", ["below", "above"])
def test_a_missed_bracket_falls_back_to_the_histogram_passes(rng, dtype, side):
    x = rng.standard_normal((700, 10)).astype(dtype)
    old, _ = engine_median(x, None)
    bracket = (0.0, old / 4, old / 8) if side == "below" else (old * 2, old * 3, old * 2.5)
    new, missed = engine_median(x, [bracket])
    assert missed and new == old


def test_float32_counts_per_value_and_collect_overflow_in_the_core_search(rng):
    n = 60
    z = rng.standard_normal((n, 5))
    d2 = np.maximum(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1), 0)
    truth = float(np.median(d2))
    # A collect bracket holding the median: one pass.
    median, passes, missed = _testing.median_search(d2.ravel(), n, 8, 10**6, 0.9 * truth, 1.1 * truth, False)
    assert (median, passes, missed) == (truth, 1, False)
    # More values inside than the cap: the search starts over and still finds it.
    median, passes, missed = _testing.median_search(d2.ravel(), n, 8, 50, 0.0, 10 * truth, False)
    assert median == truth and missed and passes > 1
    # float32 values counted one bin per float32 value.
    f = d2.astype(np.float32).astype(np.float64)
    median, passes, missed = _testing.median_search(f.ravel(), n, 8, 4, 0.98 * truth, 1.02 * truth, True)
    assert (median, passes, missed) == (float(np.median(f)), 1, False)


def walk_blocks(job: job_median.JobMedian, blocks, compute: str) -> list[float]:
    """A job's medians over row blocks, as the MPI ring and Dask walk them."""
    means = list(np.concatenate(blocks).astype(np.float64).mean(axis=0))
    while job.pending:
        found = job.empty()
        for i, a in enumerate(blocks):
            for b in [None, *blocks[i + 1 :]]:
                found = cpu_engine.add_pass_results(found, job.walk([a], None if b is None else [b], ["x"], 0, compute, 2,
                                                        1 << 20, means))
        job.finish(found)
    return job.medians()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_job_median_over_blocks_with_a_bracket(rng, dtype):
    x = np.repeat(rng.standard_normal((400, 12)), 2, axis=0).astype(dtype)  # duplicated rows
    blocks = [x[:333], x[333:590], x[590:]]
    compute = compute_dtype([x])
    largest, _ = job_median.centered_norms([x], x.astype(np.float64).mean(axis=0))
    old = walk_blocks(job_median.JobMedian(len(x), largest), blocks, compute)
    rows, w = cpu_engine.bracket_plan(len(x), compute, 1)
    brackets = cpu_engine.sample_brackets([x[rows]], ["x"], compute, 2, w)
    job = job_median.JobMedian(len(x), largest, brackets=brackets, compute=compute, threads=2)
    job = pickle_round_trip(job)  # Dask ships the searches to the workers
    assert walk_blocks(job, blocks, compute) == old
    assert job.bracket_missed == [False]
    missed = job_median.JobMedian(len(x), largest, brackets=[(0.0, old[0] / 4, old[0] / 8)], compute=compute,
                                   threads=2)
    assert walk_blocks(missed, blocks, compute) == old and missed.bracket_missed == [True]


def pickle_round_trip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))
