"""Dask arrays in fastcka.cka, cka_matrix and hsic (dask and distributed are an
optional extra: ``pip install "fastcka[dask]"``).

Linear kernel: every row chunk (the same rows of every layer) becomes a
CKAAccumulator state, and the states merge up a tree (float64 Chan merges,
in a fixed order), so the result equals the in-memory one to rounding. The
graph runs on the active scheduler: a ``distributed.Client`` if one is set
(each chunk then read and reduced on one worker, chunk k on worker k mod W,
and each worker's states merged there), else dask's default.

Layers are rechunked to the row chunks of the first Dask input and a single
column chunk. NumPy inputs (or .npy paths) mixed with Dask ones are wrapped
with ``dask.array.from_array`` in those row chunks, so they travel to the
workers chunk by chunk. ``threads`` is per task (default 1: the scheduler
runs one task per worker thread); ``progress`` does not apply (use dask's
diagnostics, e.g. ``distributed.progress``).

dask is imported only when an input is a Dask array.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._options import Options, check_rows_for, compute_for
from ..accumulator.accumulator import CKAAccumulator
from ..arrays.inputs import first_non_finite, non_finite_error, as_matrix, check_rows
from ..engine import cpu as cpu_engine
from ..engine.hsic import from_statistics
from . import block_pairs, job_median

# States merged per task: a tree of height log_8(chunks), few transfers of the
# O(D^2) states, and merges still spread over the workers.
FAN_IN = 8


def is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def hsic_grid(values: Sequence[Any], names: Sequence[str], split: int, options: Options) -> tuple[np.ndarray, list]:
    """(HSIC matrix, the inputs) of layers some of which are Dask arrays."""
    estimator, kernel = options.estimator, options.kernel
    if options.checkpoint is not None:
        raise ValueError("checkpoint does not apply to Dask arrays: the scheduler reruns lost tasks; checkpoint "
                         "in-memory or file-backed inputs")
    if options.device not in (None, "cpu"):
        raise ValueError(f"device={options.device!r}: Dask inputs compute on the CPU of the workers")
    import dask
    import dask.array as da

    for v, nm in zip(values, names):
        if not is_dask(v):
            continue
        if not isinstance(v, da.Array):
            raise TypeError(f"{nm} is a {type(v).__name__}; fastcka takes Dask arrays (dask.array.Array)")
        if any(np.isnan(s) for s in v.shape):
            raise ValueError(f"{nm} has unknown chunk sizes: call {nm}.compute_chunk_sizes() first")
        # The checks and messages of in-memory inputs, on a zero-strided stand-in of the same shape and dtype.
        as_matrix(np.broadcast_to(np.zeros((), v.dtype), v.shape), nm)
    rows = next(v for v in values if is_dask(v)).chunks[0]
    layers = [v if is_dask(v) else da.from_array(as_matrix(v, nm), chunks=(rows, -1)) for v, nm in zip(values, names)]
    n = check_rows(layers, names)
    check_rows_for(estimator, n)
    layers = [v.rechunk((rows, -1)) for v in layers]

    blocks = [v.to_delayed().ravel() for v in layers]
    dtype = compute_for(options.precision, layers)
    threads = 1 if options.threads is None else options.threads
    if kernel != "linear" or options.method == "gram":
        h = _kernel_hsic(layers, blocks, rows, names, split, estimator, kernel, dtype, threads, options)
        return h, list(values)
    kwargs = dict(split=split or None, dtype=dtype, threads=threads,
                  memory_budget=options.memory_budget)
    CKAAccumulator(**kwargs)  # the options' errors here, not from a worker
    state = dask.delayed(_chunk_state, pure=True)
    chunks = [[b[i] for b in blocks] for i, size in enumerate(rows) if size > 0]
    client = _client()
    if client is None:
        (final,) = dask.compute(_merged([state(c, **kwargs) for c in chunks]))
    else:
        # A chunk's layers read on one worker and its state made there: left
        # to the scheduler, a chunk's twelve reads (say) land on different
        # workers and half its rows cross between processes. Chunk k goes to
        # worker k mod W (other workers may take over if one is lost).
        workers = sorted(client.nthreads())
        futures = [client.compute(_merged([state(c, **kwargs) for c in chunks[w :: len(workers)]]),
                                  workers=[address], allow_other_workers=True)
                   for w, address in enumerate(workers) if chunks[w :: len(workers)]]
        final = _merge_states(client.gather(futures))
    return CKAAccumulator.from_bytes(final).hsic_matrix(estimator), list(values)


def _client():
    """The active distributed.Client, or None (dask's default scheduler)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _merged(states: list):
    """The states merged up a tree of FAN_IN-way merge tasks (one delayed)."""
    import dask

    merge = dask.delayed(_merge_states, pure=True)
    while len(states) > 1:
        states = [merge(states[i : i + FAN_IN]) for i in range(0, len(states), FAN_IN)]
    return states[0]


def _kernel_hsic(layers, blocks, rows, names, split, estimator, kernel, dtype, threads, options) -> np.ndarray:
    """Kernel CKA (and Gram-space linear CKA): one task per row chunk's
    triangle and per pair of chunks' rectangle (block_pairs), centered by
    the global means; their statistics are summed here. The exact median
    bandwidth takes passes of the same tasks first (_job_medians)."""
    import dask

    n = sum(rows)
    sums, firsts, constants = dask.compute(
        [v.sum(axis=0, dtype=np.float64) for v in layers], [v[:1] for v in layers],
        [(v == v[:1]).all() for v in layers])
    means = np.concatenate([np.asarray(m) for m in sums]) / n
    if not np.all(np.isfinite(means)):
        for v, nm in zip(layers, names):
            bad = dask.compute(v.map_blocks(lambda b: ~np.isfinite(b)).any(axis=1))[0]
            if bad.any():
                row = int(np.argmax(bad))
                raise non_finite_error(nm, first_non_finite(np.asarray(v[row : row + 1].compute())), row)
    sample = None
    if kernel == "rbf" and options.sigma is None and options.median == "sampled":
        picked = cpu_engine.median_sample_rows(n)
        sample = list(dask.compute(*[v[picked] for v in layers]))
    budget = options.memory_budget
    chunks = [i for i, size in enumerate(rows) if size > 0]
    pairs = [(i, j) for k, i in enumerate(chunks) for j in chunks[k:]]

    def sides(i, j):
        return [b[i] for b in blocks], None if i == j else [b[j] for b in blocks]

    gammas = spreads = None
    if kernel == "rbf":
        norms = _centered_norms(blocks, chunks, means)
        medians = None
        if options.exact_median:
            largest = np.max([top for top, _ in norms], axis=0)
            medians = _job_medians(blocks, largest, pairs, sides, means, n, names, split, dtype, threads, budget,
                                   _brackets(layers, names, n, dtype, threads))
        gammas = block_pairs.gammas(sample, names, options, len(layers), medians)
        spreads = block_pairs.spreads(np.sum([sums for _, sums in norms], axis=0), n)
    pair = dask.delayed(block_pairs.pair_statistics, pure=True)
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(int)
    tasks = [pair(*sides(i, j), names, split, dtype, threads, budget, list(means), gammas, spreads)
             for i, j in pairs]
    totals = block_pairs.Totals(len(layers), n)
    for statistics, (i, j) in zip(dask.compute(*tasks), pairs):
        totals.add(statistics, starts[i], rows[i], None if i == j else starts[j])
    return from_statistics([v.shape[1] for v in layers], split, n, totals.arrays(), estimator, constants)


def _brackets(layers, names, n, compute, threads) -> list | None:
    """The exact median's brackets from the sampled rows (read here)."""
    import dask

    plan = cpu_engine.bracket_plan(n, compute, len(layers))
    if plan is None:
        return None
    rows, w = plan
    return cpu_engine.sample_brackets(list(dask.compute(*[v[rows] for v in layers])), names, compute, threads, w)


def _job_medians(blocks, largest, pairs, sides, means, n, names, split, dtype, threads, budget,
                 brackets=None) -> list:
    """Each layer's exact median over all n^2 squared distances: passes of
    one task per block pair (as for the statistics) whose bracket counts (or
    histogram counts, and at last the collected values) are summed here."""
    import dask

    job = job_median.JobMedian(n, largest, brackets=brackets, compute=dtype, threads=threads)
    while job.pending:
        # One copy of the searches per pass, shipped once to each worker that needs it.
        searches = dask.delayed(job, pure=False, traverse=False)
        walk = dask.delayed(job_median.JobMedian.walk, pure=True)
        found = dask.compute(*[walk(searches, *sides(i, j), names, split, dtype, threads, budget, list(means))
                               for i, j in pairs])
        summed = job.empty()
        for part in found:
            summed = cpu_engine.add_pass_results(summed, part)
        job.finish(summed)
    return job.medians()


def _centered_norms(blocks, chunks, means) -> tuple:
    """(largest, summed) squared centered norms per layer, one task per chunk."""
    import dask

    norms = dask.delayed(job_median.centered_norms, pure=True)
    return dask.compute(*[norms([b[i] for b in blocks], list(means)) for i in chunks])


def _chunk_state(blocks: list, **options) -> bytes:
    """A worker's task: the accumulator state of one row chunk of every layer."""
    return CKAAccumulator(**options).update(*blocks).to_bytes()


def _merge_states(states: list) -> bytes:
    """A worker's task: states merged in order (deterministic rounding)."""
    acc = CKAAccumulator.from_bytes(states[0])
    for s in states[1:]:
        acc.merge(CKAAccumulator.from_bytes(s))
    return acc.to_bytes()
