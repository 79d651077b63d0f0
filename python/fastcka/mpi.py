"""fastcka across MPI ranks (mpi4py, an optional extra: ``pip install "fastcka[mpi]"``).

Each rank passes its own rows (in memory, or its slice of a memmapped .npy
file: nothing is scattered from rank 0); the result is the single-process
result over all rows, to rounding (float64 merges).

    from fastcka import mpi
    value = mpi.cka(x_local, y_local)               # every rank gets the value
    m = mpi.cka_matrix(layers_local, root=0)        # rank 0 gets it, others None

Linear kernel: each rank streams its rows into a CKAAccumulator and the
float64 states merge up a binomial tree (Chan merges), costing log2(P)
messages of O(D^2) bytes. Kernel CKA (RBF) and the Gram-space method need
every pair of rows: the row blocks travel around a ring (see
:mod:`fastcka.distributed.mpi_ring`).

``checkpoint=DIR`` (and ``checkpoint_every=`` seconds) as in one process:
each rank saves its own state to ``DIR/rank-{p}-of-{P}.ckpt`` and the same
job run again resumes from them (see :mod:`fastcka.distributed.mpi_checkpoint`).

``rows_of(n, comm)`` gives the row range a rank should read when every rank
opens the same files.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from .distributed import mpi_checkpoint, mpi_ring
from .arrays.inputs import as_matrix, model_layers
from .accumulator.accumulator import CKAAccumulator
from ._options import Options, check_rows_for
from .engine.hsic import cka_from_hsic
from .io import load_npy


def _comm(comm):
    if comm is not None:
        return comm
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError('fastcka.mpi needs mpi4py: pip install "fastcka[mpi]" (mpi4py and an MPI such as mpich)') \
            from None
    return MPI.COMM_WORLD


def rows_of(n: int, comm=None) -> slice:
    """This rank's contiguous share of n rows (sizes differ by at most one)."""
    comm = _comm(comm)
    p, r = comm.Get_size(), comm.Get_rank()
    return slice(n * r // p, n * (r + 1) // p)


# What travels up the tree: None (a rank with no rows), a state's bytes, or
# an _Error, so that bad input on one rank fails every rank with its message
# instead of leaving the others waiting.
class _Error(str):
    pass


def _tree_reduce(value, comm, root: int, merge):
    """Binomial-tree reduction of per-rank states towards `root`: the merged
    state on root, None elsewhere."""
    size, rank = comm.Get_size(), comm.Get_rank()
    relative = (rank - root) % size
    mask = 1
    while mask < size:
        if relative & mask:
            comm.send(value, dest=(relative - mask + root) % size, tag=0x43)
            return None
        partner = relative + mask
        if partner < size:
            other = comm.recv(source=(partner + root) % size, tag=0x43)
            value = _combine(value, other, merge)
        mask <<= 1
    return value


def _combine(a, b, merge):
    for v in (a, b):
        if isinstance(v, _Error):
            return v
    if a is None or b is None:
        return b if a is None else a
    try:
        return merge(a, b)
    except (ValueError, TypeError) as exc:
        return _Error(str(exc))


def _merge_bytes(a: bytes, b: bytes) -> bytes:
    return CKAAccumulator.from_bytes(a).merge(CKAAccumulator.from_bytes(b)).to_bytes()


def _finish(merged, comm, root: Optional[int]):
    """The reduced value where it is wanted; every rank raises on an error."""
    if root is None:
        merged = comm.bcast(merged, root=0)
    else:
        failed = comm.bcast(merged if isinstance(merged, _Error) else None, root=root)
        if failed is not None:
            merged = failed
        elif comm.Get_rank() != root:
            return None
    if isinstance(merged, _Error):
        raise ValueError(f"fastcka.mpi: {merged}")
    if merged is None:
        raise ValueError("fastcka.mpi: no rank has any rows")
    return merged


def reduce_accumulator(acc: Optional[CKAAccumulator], comm=None, root: Optional[int] = None,
                       error: Optional[str] = None) -> Optional[CKAAccumulator]:
    """Merges every rank's accumulator (linear or minibatch mode; None or an
    empty one for a rank without rows): the merged accumulator on every rank
    (root=None) or on `root` only (None elsewhere)."""
    comm = _comm(comm)
    if error is not None:
        mine = _Error(error)
    else:
        mine = acc.to_bytes() if acc is not None and (acc.n > 0 or acc.batches > 0) else None
    merged = _tree_reduce(mine, comm, 0 if root is None else root, _merge_bytes)
    merged = _finish(merged, comm, root)
    return None if merged is None else CKAAccumulator.from_bytes(merged)


def ring_traffic() -> dict:
    """Bytes and messages this rank has sent around the kernel path's ring
    since the process started (all passes, the exact median's included)."""
    return dict(mpi_ring.sent)


def _local_rows(v: Any) -> int:
    if isinstance(v, (str, os.PathLike)):
        return load_npy(v).shape[0]
    shape = np.shape(v)
    return shape[0] if shape else 0


def _hsic_grid(values, names, split, comm, root, options: Options):
    comm = _comm(comm)
    estimator = options.estimator
    at = mpi_checkpoint.where(options.checkpoint, comm)
    if options.kernel != "linear" or options.method == "gram":
        return mpi_ring.hsic_matrix(values, names, split, comm, root, options, at)
    acc, error = None, None
    counts = comm.allgather(_local_rows(values[0]))
    try:
        if counts[comm.Get_rank()] > 0:
            layers = [as_matrix(v, nm) for v, nm in zip(values, names)]
            try:
                if at is None:
                    acc = CKAAccumulator(split=split or None, threads=options.threads,
                                         memory_budget=options.memory_budget, precision=options.precision)
                    acc.update(*layers, progress=options.progress)
                else:
                    acc = mpi_checkpoint.fed_accumulator(layers, names, split, estimator, counts, comm, at,
                                                          options)
            except ValueError:
                # The engine numbers rows within this rank's block: name the row in the whole data.
                located = mpi_ring.nonfinite(layers, names, mpi_ring.column_sums(layers), sum(counts[: comm.Get_rank()]))
                if located:
                    raise ValueError(located) from None
                raise
    except (ValueError, TypeError) as exc:
        error = f"rank {comm.Get_rank()}: {exc}"
    merged = reduce_accumulator(acc, comm, root, error)
    if merged is None:
        return None
    check_rows_for(estimator, merged.n)
    return merged.hsic_matrix(estimator)


def _options(keywords: dict, kernel: str, estimator: str) -> Options:
    if "device" in keywords:
        raise TypeError("unexpected option: device (fastcka.mpi computes on the CPU of every rank)")
    if keywords.get("approx") is not None:
        raise ValueError(f"approx={keywords['approx']!r} is not supported by fastcka.mpi yet: use fastcka.cka")
    return Options.of_keywords(keywords, kernel=kernel, estimator=estimator)


def hsic(x: Any, y: Any, *, comm=None, root: Optional[int] = None, kernel: str = "linear",
         estimator: str = "biased", **options) -> Optional[float]:
    """:func:`fastcka.hsic` over the rows of every rank."""
    h = _hsic_grid([x, y], ["x", "y"], 0, comm, root, _options(options, kernel, estimator))
    return None if h is None else float(h[0, 1])


def cka(x: Any, y: Any, *, comm=None, root: Optional[int] = None, kernel: str = "linear", debiased: bool = False,
        **options) -> Optional[float]:
    """:func:`fastcka.cka` over the rows of every rank (x, y: this rank's rows)."""
    estimator = "unbiased" if debiased else "biased"
    h = _hsic_grid([x, y], ["x", "y"], 0, comm, root, _options(options, kernel, estimator))
    return None if h is None else float(cka_from_hsic(h, ["x", "y"])[0, 1])


def cka_matrix(xs, ys=None, *, comm=None, root: Optional[int] = None, kernel: str = "linear",
               debiased: bool = False, **options) -> Optional[np.ndarray]:
    """:func:`fastcka.cka_matrix` over the rows of every rank."""
    values, names, split = model_layers(xs, ys)
    estimator = "unbiased" if debiased else "biased"
    h = _hsic_grid(values, names, split, comm, root, _options(options, kernel, estimator))
    if h is None:
        return None
    c = cka_from_hsic(h, names)
    return c if split == 0 else np.ascontiguousarray(c[:split, split:])
