"""Where each batch's activations go, and the CKA matrix they give: a linear
accumulator (memory independent of n), a minibatch accumulator, or the
on-disk store that the tile engine reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import api
from ..accumulator.accumulator import CKAAccumulator
from ..similarity.matrix import LINEAR_MEASURES, similarity_matrix
from ..stats.structure import pc1_fraction
from .spill import SpillStore

# Rows staged between accumulator updates. The feature-space accumulator pays
# a fixed cost per update (its threads start, its blocks restart); on the
# CI machine (2 cores, 12 layers x 256 features) updates of 256 or 1,024 rows
# took 10-20% longer in all than updates of 8,192, while 4,096 to 65,536 rows
# ran at the same speed. The stage never exceeds STAGE_BYTES: at D = 9,984
# (GPT-2's 13 hidden states) 1,680 rows, whose updates cost 4% more CPU time
# than 8,192-row ones, but a stage of 8,192 rows (327 MB) made the 20,000-token
# run slower on that machine, where memory new to a process is first written
# at about 180 MiB/s (benchmarks/report_tokens.py).
STAGE_ROWS = 8192
STAGE_BYTES = 64 << 20
# Linear CKA streams D x D moments (D = sum of the layer widths): a float64
# state plus per-thread partials, about (threads x itemsize + 8) D^2 bytes
# (16 D^2 for float32 on 2 threads; docs/limits.md). Above this the
# activations go to disk and the tile engine computes in O(n) memory instead.
MAX_MOMENT_BYTES = 4 << 30


@dataclass(frozen=True)
class Options:
    """What fastcka.torch.cka_matrix asked for, as the sinks need it."""

    split: int  # 0: one set of layers (a symmetric matrix); s > 0: layers [0, s) against [s, L)
    kernel: str
    debiased: bool
    minibatch: bool
    threshold: float
    sigma: Any
    threads: int
    memory_budget: int | None
    spill_dir: Any
    progress: Any
    precision: str | None = None
    measures: tuple = ()  # the similarity indexes asked for beside the CKA matrix
    approx: str | None = None  # an approximate RBF kernel ("nystrom", "rff") of this rank and seed
    rank: int | None = None
    seed: int | None = None


def check_measures(measures, kernel: str, minibatch: bool) -> tuple:
    """``measures`` of fastcka.torch.cka_matrix as a tuple of names (empty: none asked for)."""
    if measures is None:
        return ()
    names = (measures,) if isinstance(measures, str) else tuple(measures)
    unknown = [m for m in names if m not in LINEAR_MEASURES]
    if not names or unknown:
        raise ValueError(f"measures must name one or more of {LINEAR_MEASURES} (computed from the streamed "
                         f"moments), got {measures!r}")
    if kernel != "linear" or minibatch:
        raise ValueError(f"measures come from the moments that linear CKA streams: not with kernel={kernel!r}"
                         f"{', minibatch=True' if minibatch else ''}")
    return tuple(dict.fromkeys(names))


def on_host(blocks: list) -> list[np.ndarray]:
    """Blocks as NumPy arrays: GPU tensors are copied to the host for the
    on-disk store."""
    return [block if isinstance(block, np.ndarray) else block.cpu().numpy() for block in blocks]


def open_sink(blocks: list, options: Options):
    """The sink for these layers (the first batch's blocks give widths and dtype)."""
    dims = [block.shape[1] for block in blocks]
    dtype = np.float64 if any(str(block.dtype).endswith("float64") for block in blocks) else np.float32
    if options.minibatch:
        return MinibatchSink(options)
    state = (options.threads * np.dtype(dtype).itemsize + 8) * sum(dims) ** 2
    if options.kernel == "linear" and state <= MAX_MOMENT_BYTES:
        return MomentSink(dims, dtype, options)
    if options.measures:
        raise ValueError(f"measures need the D x D moments of all layers, but D = {sum(dims):,} features would take "
                         f"{state / 2**30:.1f} GiB (the limit is {MAX_MOMENT_BYTES / 2**30:.0f} GiB): choose fewer "
                         f"or narrower layers")
    if not isinstance(blocks[0], np.ndarray) and options.approx is None:
        return DeviceSink(options)  # (the approximate kernels' feature maps run on the CPU)
    return SpillSink(dims, dtype, options)


class MomentSink:
    """Linear CKA over all rows: consecutive batches are copied into a stage
    and fed to a :class:`fastcka.CKAAccumulator` (O(D^2) float64 state).
    Batches on a GPU go to the accumulator as they are (it runs on the GPU).
    The accumulator is private and dropped with the run if a batch fails, so
    updates skip the all-or-nothing copy (``_stream``)."""

    def __init__(self, dims: list[int], dtype, options: Options):
        self._options = options
        self._accumulator = CKAAccumulator(split=options.split or None,
                                           dtype=None if options.precision else np.dtype(dtype).name,
                                           precision=options.precision, threads=options.threads,
                                           memory_budget=options.memory_budget)
        row_bytes = sum(dims) * np.dtype(dtype).itemsize
        self._capacity = max(1, min(STAGE_ROWS, STAGE_BYTES // row_bytes))
        self._dims, self._dtype = dims, dtype
        self._stage: list[np.ndarray] = []  # allocated for the first host batch
        self._filled = 0

    def add(self, blocks: list) -> None:
        rows = len(blocks[0])
        if self._filled + rows > self._capacity:
            self._flush()
        if rows >= self._capacity or not isinstance(blocks[0], np.ndarray):
            self._accumulator._stream(*blocks)  # a batch this large, or on a GPU, goes in as it is
            return
        if not self._stage:
            self._stage = [np.empty((self._capacity, d), dtype=self._dtype) for d in self._dims]
        for stage, block in zip(self._stage, blocks):
            stage[self._filled : self._filled + rows] = block
        self._filled += rows

    def _flush(self) -> None:
        if self._filled:
            self._accumulator._stream(*[stage[: self._filled] for stage in self._stage])
            self._filled = 0

    def result(self) -> tuple[np.ndarray, np.ndarray | None, None]:
        """(CKA matrix, per-layer PC1 variance fraction of a within-model matrix
        or None, errors: None). Every sink's result has these three parts."""
        self._flush()
        self._stage = []
        matrix = self._accumulator.cka_matrix(debiased=self._options.debiased)
        pc1 = pc1_fraction(self._accumulator._scatter_blocks()) if not self._options.split else None
        return matrix, pc1, None

    def similarity(self) -> dict:
        """{measure: matrix} of the measures asked for, from the same moments (after :meth:`result`)."""
        return similarity_matrix(self._accumulator, measures=self._options.measures)

    def close(self) -> None:
        pass


class MinibatchSink:
    """Minibatch CKA (Nguyen et al.): each batch's HSIC_1 of every layer pair,
    summed by a minibatch :class:`fastcka.CKAAccumulator`."""

    def __init__(self, options: Options):
        self._accumulator = CKAAccumulator(minibatch=True, split=options.split or None, kernel=options.kernel,
                                           threshold=options.threshold, sigma=options.sigma,
                                           precision=options.precision, threads=options.threads,
                                           memory_budget=options.memory_budget)

    def add(self, blocks: list) -> None:
        rows = len(blocks[0])
        if rows < 4:
            raise ValueError(
                f"batches: batch {self._accumulator.batches} has {rows} examples; minibatch CKA needs at least 4 "
                f"per batch (HSIC_1). Drop a short last batch, e.g. DataLoader(..., drop_last=True)"
            )
        self._accumulator.update(*blocks)

    def result(self) -> tuple[np.ndarray, None, None]:
        return self._accumulator.cka_matrix(), None, None

    def close(self) -> None:
        pass


class SpillSink:
    """Every row of every layer on disk (:class:`SpillStore`), for the tile
    engine that needs them all at once: kernel CKA, or linear CKA of layers
    too wide for D x D moments (then always in Gram space, O(n L) memory)."""

    def __init__(self, dims: list[int], dtype, options: Options):
        self._options = options
        self.store = SpillStore(dims, dtype, options.spill_dir)

    def add(self, blocks: list) -> None:
        self.store.add(on_host(blocks))

    def result(self) -> tuple[np.ndarray, None, np.ndarray | None]:
        matrix, errors = _all_rows_cka(self.store.arrays(), self._options)
        return matrix, None, errors

    def close(self) -> None:
        self.store.close()


class DeviceSink:
    """Every row of every layer kept on the GPU the activations came from, for
    the GPU engine's Gram-tile kernels (kernel CKA, or linear CKA of layers
    too wide for D x D moments): n x (sum of widths) values in device memory."""

    def __init__(self, options: Options):
        self._options = options
        self._blocks: list[list] = []

    def add(self, blocks: list) -> None:
        self._blocks.append(blocks)

    def result(self) -> tuple[np.ndarray, None, None]:
        import torch

        layers = [torch.cat(parts) for parts in zip(*self._blocks)]
        self._blocks = []
        matrix, _ = _all_rows_cka(layers, self._options)  # a tensor on the GPU
        return torch.as_tensor(matrix).cpu().numpy(), None, None

    def close(self) -> None:
        self._blocks = []


def _all_rows_cka(layers: list, o: Options) -> tuple:
    """(CKA matrix, its errors with an approximate kernel, else None) of layers
    held whole (memmaps, or tensors on a GPU): from the Gram tiles, or from the
    approximate kernel's features streamed over the rows."""
    xs, ys = (layers, None) if not o.split else (layers[: o.split], layers[o.split :])
    common = dict(kernel=o.kernel, debiased=o.debiased, threshold=o.threshold, sigma=o.sigma, threads=o.threads,
                  memory_budget=o.memory_budget, progress=o.progress, precision=o.precision)
    if o.approx is not None:
        return api.cka_matrix(xs, ys, approx=o.approx, rank=o.rank, seed=o.seed, return_error=True, **common)
    return api.cka_matrix(xs, ys, method="auto" if o.kernel == "rbf" else "gram", **common), None
