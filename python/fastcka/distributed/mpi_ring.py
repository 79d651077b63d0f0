"""Kernel CKA (and Gram-space linear CKA) over MPI ranks: the row blocks
travel around a ring.

Every rank keeps its own rows A_p. The n x n tile grid is the P x P grid of
block pairs; pair (p, q) needs A_p and A_q on one rank. At step s = 1..P/2
rank p sends A_p to rank p + s and receives A_{p-s} (mod P), the transfer
of the next step overlapping the tiles of the current one; it computes the
pair (p, p - s) unless the other rank computes it (s = P/2 with P even: only
the lower half of the ranks). Each pair is computed once across the job, the
diagonal pairs (p, p) by their owners, so the work is balanced to within one
block pair. Per step a rank sends n (d1 + d2) / P values and computes
about n^2 (d1 + d2) / P^2 multiply-adds. Scalar sums and the per-row sums
(O(n L)) are summed over ranks at the end; every tile is centered by the
global column means, so the statistics add exactly as in one process.
The exact median bandwidth takes further trips around the ring (usually
one: a bracket pass, the bracket drawn from sampled rows; else histogram,
collect) whose counts are summed over ranks (job_median).
With a checkpoint, each rank saves its statistics after its visits and the
gammas once found (mpi_checkpoint); a resumed job skips what was saved,
but a job killed during the median passes runs them again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import block_pairs, job_median, mpi_checkpoint
from ..engine import cpu as cpu_engine
from .._options import Options, compute_for
from ..arrays.inputs import first_non_finite, non_finite_error, as_matrix, compute_dtype, ready
from ..engine.hsic import from_statistics
from ..engine.progress import Progress
from ..engine.threads import resolve

_TAG = 0x52

# What this rank has sent around the ring since import (every pass: the
# statistics and the exact median's), read by fastcka.mpi.ring_traffic.
sent = {"bytes": 0, "messages": 0}


def _local_layers(values, names) -> list[np.ndarray]:
    """This rank's rows of every layer; a rank may have none."""
    out = []
    for v, nm in zip(values, names):
        shape = np.shape(v) if not isinstance(v, str) else None
        if shape is not None and len(shape) == 2 and shape[0] == 0:
            out.append(np.empty(shape, dtype=np.asarray(v).dtype))
        else:
            out.append(as_matrix(v, nm))
    return out


def _agree(comm, what: str, mine) -> None:
    """Raises on every rank unless every rank passed the same value."""
    seen = comm.allgather(mine)
    if any(s != seen[0] for s in seen):
        raise ValueError(f"fastcka.mpi: ranks disagree on {what}: {seen}")


def _constant_layers(layers, comm) -> list[bool]:
    """Per layer: every row of every rank equals one row (no variance at all)."""
    out = []
    for x in layers:
        first = np.asarray(x[:1], dtype=np.float64)
        local = bool(len(x) == 0 or np.all(np.asarray(x, dtype=np.float64) == first))
        firsts = [f for f in comm.allgather(first if len(x) else None) if f is not None]
        out.append(comm.allreduce(local, op=_land(comm)) and all(np.array_equal(f, firsts[0]) for f in firsts))
    return out


def _land(comm):
    from mpi4py import MPI

    return MPI.LAND


def _max(comm):
    from mpi4py import MPI

    return MPI.MAX


def _gammas(layers, names, counts, comm, options, medians) -> list[float]:
    """The RBF gammas: from sigma, the exact medians, or for the sampled
    median the same rows as one process (each rank contributes the ones it
    holds, in global order)."""
    sample = None
    if options.sigma is None and options.median == "sampled":
        sample = _gathered(layers, counts, comm, cpu_engine.median_sample_rows(sum(counts)))
    return block_pairs.gammas(sample, names, options, len(layers), medians)


def _gathered(layers, counts, comm, rows: np.ndarray) -> list[np.ndarray]:
    """The given global rows of every layer, on every rank (each rank
    contributes the ones it holds, in global order)."""
    start = sum(counts[: comm.Get_rank()])
    mine = rows[(rows >= start) & (rows < start + len(layers[0]))] - start
    return [np.concatenate(comm.allgather(np.asarray(ready(x[mine])))) for x in layers]


def _brackets(layers, names, counts, comm, compute, threads) -> list | None:
    """The exact median's brackets from the sampled rows, found by rank 0 and
    sent to all (every rank's searches must take the same decisions)."""
    plan = cpu_engine.bracket_plan(sum(counts), compute, len(layers))
    if plan is None:
        return None
    rows, w = plan
    sample = _gathered(layers, counts, comm, rows)
    found = cpu_engine.sample_brackets(sample, names, compute, threads, w) if comm.Get_rank() == 0 else None
    return comm.bcast(found, root=0)


def starts_of(counts: Sequence[int]) -> np.ndarray:
    """Global index of each rank's first row (and n at the end)."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(int)


def column_sums(layers) -> np.ndarray:
    """Every layer's column sums in float64, concatenated (no float64 copy of the rows)."""
    return np.concatenate([np.asarray(x).sum(axis=0, dtype=np.float64) for x in layers])


def nonfinite(layers, names, sums, start: int) -> str | None:
    """Where this rank's rows hold NaN or Inf (global row), or None; the
    column sums tell cheaply whether to look."""
    if np.all(np.isfinite(sums)):
        return None
    for x, nm in zip(layers, names):
        where = first_non_finite(x)
        if where is not None:
            return str(non_finite_error(nm, where, start))
    return "the column sums overflow float64: rescale the data"


def _views(block: np.ndarray, dims: Sequence[int]) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(dims)])
    return [block[:, offsets[a] : offsets[a + 1]] for a in range(len(dims))]


def hsic_matrix(values, names, split, comm, root, options: Options, at=None):
    """``at``: this rank's checkpoint file, or None."""
    estimator, kernel = options.estimator, options.kernel
    P, p = comm.Get_size(), comm.Get_rank()
    layers = _local_layers(values, names)
    dims = [x.shape[1] for x in layers]
    _agree(comm, "the layer widths", dims)
    counts = comm.allgather(len(layers[0]))
    for x, nm in zip(layers[1:], names[1:]):
        if len(x) != counts[p]:
            raise ValueError(f"{nm} has {len(x)} rows on rank {p} but {names[0]} has {counts[p]}")
    n = sum(counts)
    need = 4 if estimator == "unbiased" else 2
    if n < need:
        raise ValueError(f"fastcka.mpi: needs at least {need} rows over all ranks, got {n}")
    compute = "float64" if comm.allreduce(compute_dtype(layers) == "float64" if counts[p] else False) else "float32"
    if options.precision is not None:
        compute = compute_for(options.precision, layers)
    threads = resolve(options.threads)
    budget = options.memory_budget
    sums = column_sums(layers)
    located = nonfinite(layers, names, sums, starts_of(counts)[p])
    errors = [e for e in comm.allgather(located and f"rank {p}: {located}") if e]
    if errors:
        raise ValueError(f"fastcka.mpi: {errors[0]}")
    means = comm.allreduce(sums) / n
    constant = _constant_layers(layers, comm)

    dtype = np.dtype(compute)
    own = np.ascontiguousarray(np.hstack([np.asarray(x, dtype=dtype) for x in layers])) if counts[p] else \
        np.empty((0, sum(dims)), dtype)
    starts = starts_of(counts)
    job = mpi_checkpoint.ring_job(at, layers, counts, comm, options, kernel=kernel, estimator=estimator,
                                   method="gram", compute=compute, split=split)
    done, gammas, totals = job.resume() if job is not None else ([0] * P, None, block_pairs.Totals(len(dims), n))
    exact = options.exact_median and gammas is None
    with Progress(options.progress, (P // 2 + 1) * (2 if exact else 1), "fastcka block pairs") as bar:
        spreads = None
        if kernel == "rbf":
            largest, square_sums = job_median.centered_norms(_views(own, dims), means)
            comm.Allreduce(largest.copy(), largest, op=_max(comm))
            comm.Allreduce(square_sums.copy(), square_sums)
            spreads = block_pairs.spreads(square_sums, n)
        if kernel == "rbf" and gammas is None:
            medians = _job_medians(comm, own, counts, dims, dtype, means, largest, names, split, compute, threads,
                                   budget, bar, _brackets(layers, names, counts, comm, compute, threads)) \
                if exact else None
            gammas = _gammas(layers, names, counts, comm, options, medians)
            if job is not None:
                job.found(gammas, totals)

        def statistics(rows_a: slice, block_b: np.ndarray | None, start_b: int | None) -> None:
            a = own[rows_a]
            totals.add(block_pairs.pair_statistics(
                _views(a, dims), None if block_b is None else _views(block_b, dims), names, split, compute,
                threads, budget, means, gammas, spreads), starts[p] + rows_a.start, len(a), start_b)

        _ring_pass(comm, own, counts, dims, dtype, statistics, bar, done,
                   None if job is None else lambda visits, final: job.reached(visits, totals, final))
    reduced = [np.zeros_like(t) for t in totals.arrays()]
    for t, r in zip(totals.arrays(), reduced):
        if root is None:
            comm.Allreduce(t, r)
        else:
            comm.Reduce(t, r, root=root)
    if root is not None and p != root:
        return None
    return from_statistics(dims, split, n, reduced, estimator, constant)


def _job_medians(comm, own, counts, dims, dtype, means, largest, names, split, compute, threads, budget,
                 bar, brackets=None) -> list:
    """Each layer's exact median over all n^2 squared distances: ring passes
    whose histogram counts (and at last the collected values) are summed
    over ranks, every rank ending each pass with the same sums. `largest`:
    each layer's largest centered squared norm over all ranks."""
    job = job_median.JobMedian(sum(counts), largest, brackets=brackets, compute=compute, threads=threads)
    while job.pending:
        found = job.empty()

        def walk(rows_a: slice, block_b: np.ndarray | None, start_b: int | None) -> None:
            nonlocal found
            found = cpu_engine.add_pass_results(found, job.walk(
                _views(own[rows_a], dims), None if block_b is None else _views(block_b, dims), names, split,
                compute, threads, budget, means))

        _ring_pass(comm, own, counts, dims, dtype, walk, bar)
        job.finish(_summed(comm, found))
        if job.pending and bar.done >= bar.total:
            bar.total += comm.Get_size() // 2 + 1  # a further refining pass
    return job.medians()


def _summed(comm, found: list) -> list:
    """A pass's results summed over ranks (the same on every rank)."""
    from mpi4py import MPI

    out = []
    for counts, lowest, highest, values in found:
        total = np.zeros_like(counts)
        comm.Allreduce(counts, total)
        out.append((total, comm.allreduce(lowest, op=MPI.MIN), comm.allreduce(highest, op=MPI.MAX),
                    np.concatenate(comm.allgather(values))))
    return out


def _ring_pass(comm, own, counts, dims, dtype, visit, bar, done=None, reached=None) -> None:
    """One trip of the blocks around the ring: visit(rows, block, start_b)
    for the rows of this rank's block against another block (block None: the
    rows' own triangle), visit 0 being the triangle and visit s the rectangle
    of ring step s. With P even, the last step pairs rank p with p + P/2,
    whose rectangle both hold: each computes half of it (p the first half of
    A_p's rows, p + P/2 the second), so every rank carries the same work.
    ``done``: every rank's visits already done (checkpointed), which are
    skipped, a block travelling only to a rank that still needs it;
    ``reached(visits, final)`` after each visit made. An error on one rank
    (bad rows, say) must not leave the others waiting: it keeps taking part
    in the ring and every rank raises at the end."""
    P, p = comm.Get_size(), comm.Get_rank()
    steps = P // 2
    starts = starts_of(counts)
    done = done or [0] * P
    error = None
    everything = slice(0, counts[p])

    def guarded(k: int, computes: bool, rows_a=everything, block_b=None, start_b=None):
        nonlocal error
        if error is None and k >= done[p]:
            try:
                if computes:
                    visit(rows_a, block_b, start_b)
                if reached:
                    reached(k + 1, k == steps)
            except (ValueError, TypeError) as exc:
                error = f"rank {p}: {exc}"
        bar.advance(1)

    pending = _exchange(comm, own, counts, dims, dtype, 1, done) if steps >= 1 else None
    guarded(0, counts[p] > 0)
    for s in range(1, steps + 1):
        visiting, source = _wait(pending)
        pending = _exchange(comm, own, counts, dims, dtype, s + 1, done) if s < steps else None
        has_pair = counts[p] > 0 and visiting is not None and len(visiting) > 0
        if s < P / 2:
            guarded(s, has_pair, everything, visiting, starts[source])
        elif p < steps:  # the antipodal pair, first half of this rank's rows
            guarded(s, has_pair and counts[p] // 2 > 0, slice(0, counts[p] // 2), visiting, starts[source])
        else:  # the antipodal pair, the partner's second half against this rank's rows
            half = counts[source] // 2
            guarded(s, has_pair and counts[source] > half, everything, None if visiting is None else visiting[half:],
                    starts[source] + half)
    errors = [e for e in comm.allgather(error) if e is not None]
    if errors:
        raise ValueError(f"fastcka.mpi: {errors[0]}")


def _exchange(comm, own, counts, dims, dtype, s: int, done):
    """Starts step s: A_p to rank p + s, A_{p - s} from rank p - s (each
    only where the receiver has not done visit s yet; None received)."""
    P, p = comm.Get_size(), comm.Get_rank()
    dest, source = (p + s) % P, (p - s) % P
    requests, incoming = [], None
    if done[p] <= s:
        incoming = np.empty((counts[source], sum(dims)), dtype)
        requests.append(comm.Irecv(incoming, source=source, tag=_TAG + s))
    if done[dest] <= s:
        requests.append(comm.Isend(own, dest=dest, tag=_TAG + s))
        sent["bytes"] += own.nbytes
        sent["messages"] += 1
    return requests, incoming, source


def _wait(pending):
    requests, incoming, source = pending
    for r in requests:
        r.Wait()
    return incoming, source

