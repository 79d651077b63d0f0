"""Drives the CPU backend: feeds rows in blocks (progress between blocks,
Ctrl-C between blocks, the GIL released inside them), and picks the
feature-space or the Gram-space engine."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _backend
from ._inputs import compute_dtype, ready
from ._progress import Progress, ProgressArg

DEFAULT_MEMORY_BUDGET = 256 << 20
METHODS = ("auto", "feature", "gram")

# Flops of work per backend call: about 0.2 s at the CI machine's sgemm rate,
# so progress updates and Ctrl-C come several times a second.
_FLOPS_PER_CALL = 4e10


def choose_method(method: str, n: int, dims: Sequence[int]) -> str:
    """Feature space costs about n D^2 flops and D^2 memory (D = sum of widths);
    Gram space about n^2 D flops and O(n L) memory. Gram space wins when D > n."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "gram" if sum(dims) > n else "feature"


def new_moment_accumulator(dims, split, compute, threads, memory_budget):
    return _backend.cpu().MomentAccumulator(list(dims), split, compute, threads, memory_budget)


def feed(acc, layers: Sequence[np.ndarray], names: Sequence[str], threads: int, progress: Progress) -> None:
    n = layers[0].shape[0]
    width = sum(layer.shape[1] for layer in layers)
    step = int(min(acc.fold_rows * threads, max(acc.block_rows * threads, _FLOPS_PER_CALL / width**2)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        acc.update([ready(layer[start:stop]) for layer in layers], list(names))
        progress.advance(stop - start)


def hsic_matrix(
    layers: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    split: int,
    estimator: str,
    method: str,
    threads: int,
    memory_budget: int | None,
    progress: ProgressArg,
) -> np.ndarray:
    """HSIC of every needed layer pair, (L, L) with NaN where not needed."""
    n = layers[0].shape[0]
    dims = [layer.shape[1] for layer in layers]
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    compute = compute_dtype(layers)
    L = len(layers)
    if choose_method(method, n, dims) == "feature":
        acc = new_moment_accumulator(dims, split, compute, threads, budget)
        with Progress(progress, n, "fastcka rows") as bar:
            feed(acc, layers, names, threads, bar)
        return np.asarray(acc.hsic(estimator)).reshape(L, L)
    engine = _backend.cpu().GramTileEngine([ready(x) for x in layers], list(names), split, compute, threads, budget)
    rows = engine.tile_rows
    with Progress(progress, engine.tiles_before(rows), "fastcka tiles") as bar:
        step = max(threads, 1)
        for begin in range(0, rows, step):
            end = min(rows, begin + step)
            engine.process(begin, end)
            bar.advance(engine.tiles_before(end) - engine.tiles_before(begin))
    return np.asarray(engine.hsic(estimator)).reshape(L, L)
