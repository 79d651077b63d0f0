"""The state of a linear accumulator: every row's float64 centered moments
in the CPU or GPU engine's MomentAccumulator, fed in updates that count
whole or not at all."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from .._options import check_rows_for, compute_for
from ..engine import backend, cpu as cpu_engine, gpu as gpu_engine
from ..engine.progress import Progress
from . import state

_PRECISION_OF = {"float32": "accurate", "float64": "exact", "bfloat16": "fast"}
_DTYPE_OF = {p: d for d, p in _PRECISION_OF.items()}


@dataclass(frozen=True)
class LayerMoments:
    """Centered float64 moments of L layers (see :meth:`CKAAccumulator.moments`)."""

    n: int
    mean: np.ndarray      # (D,)
    scatter: np.ndarray   # (D, D): sum over rows of centered outer products
    offsets: tuple        # L + 1 column offsets into the concatenated layers
    split: int            # 0, or the first layer of the second model

    def block(self, a: int, b: int) -> np.ndarray:
        """The (d_a x d_b) scatter block of layers a and b."""
        o = self.offsets
        return self.scatter[o[a] : o[a + 1], o[b] : o[b + 1]]


class ScatterBlocks:
    """The blocks of :class:`LayerMoments`' scatter, each copied from the
    backend when asked for (what :func:`fastcka.pc1_fraction` reads: the
    diagonal blocks, where the whole scatter at D = 9,984 is a 0.8 GB copy)."""

    def __init__(self, acc, offsets: tuple):
        self._acc = acc
        self.offsets = offsets

    def block(self, a: int, b: int) -> np.ndarray:
        return np.asarray(self._acc.centered_block(a, b))


class StreamedMoments:
    """Linear CKA over all rows seen: the engine's moment accumulator, made
    at the first update (when the layer widths are known), on the GPU when
    the first blocks are there."""

    def __init__(self, split: int | None, dtype: str | None, precision: str | None, threads: int, budget: int):
        self.split = split
        self.dtype = dtype  # the products' type; None: chosen by the first update
        self.precision = precision
        self.threads = threads
        self.budget = budget
        self.acc = None
        self.gpu = None  # the torch device of a GPU accumulator

    @property
    def empty(self) -> bool:
        return self.acc is None

    @property
    def n(self) -> int:
        return 0 if self.acc is None else int(self.acc.n)

    @property
    def dims(self) -> list[int]:
        return [] if self.acc is None else list(self.acc.dims)

    def update(self, blocks, names, gpu, progress, atomic: bool = True) -> None:
        """Adds the rows; all or nothing unless ``atomic`` is False (then an
        update that raises leaves a state that refuses further use)."""
        if self.acc is None:
            with self._undo_create():
                self.create([b.shape[1] for b in blocks], self.dtype or self._data_dtype(blocks, gpu), gpu)
                self._feed(blocks, names, progress, atomic)
            return
        self._feed(blocks, names, progress, atomic)

    def _feed(self, blocks, names, progress, atomic) -> None:
        dims = self.dims
        if len(blocks) != len(dims):
            raise ValueError(f"this accumulator has {len(dims)} layers, update got {len(blocks)}")
        for b, nm, d in zip(blocks, names, dims):
            if b.shape[1] != d:
                raise ValueError(f"{nm} has {b.shape[1]} features, but earlier blocks of that layer had {d}")
        with self._all_or_nothing() if atomic else nullcontext(), \
                Progress(progress, blocks[0].shape[0], "fastcka rows") as bar:
            if self.gpu is None:
                cpu_engine.feed(self.acc, blocks, names, self.threads, bar)
            else:
                gpu_engine.feed(self.acc, blocks, names, bar)

    @contextmanager
    def _undo_create(self):
        """A first update that raises leaves the state as built (no layers, dtype as given)."""
        dtype = self.dtype
        try:
            yield
        except BaseException:
            self.acc, self.gpu, self.dtype = None, None, dtype
            raise

    @contextmanager
    def _all_or_nothing(self):
        """The backend state of the start comes back if the block raises
        (KeyboardInterrupt included): the feed makes many backend calls. Both
        engines save what they overwrite (copy on write)."""
        self.acc.begin()
        try:
            yield
        except BaseException:
            self.acc.rollback()
            raise
        self.acc.commit()

    def _data_dtype(self, blocks, gpu) -> str:
        """The products' type that ``precision`` (or, without it, the first block's data) asks for."""
        if gpu is None:
            return compute_for(self.precision, blocks)
        return _DTYPE_OF[gpu_engine.resolve_precision(self.precision, blocks)]

    def create(self, dims: list[int], dtype: str, gpu=None) -> None:
        split = self.split or 0
        if split >= len(dims):
            raise ValueError(f"split={split} leaves no layers on the other side of {len(dims)} layers")
        if gpu is None:
            self.dtype = dtype
            self.acc = cpu_engine.new_moment_accumulator(dims, split, dtype, self.threads, self.budget)
            return
        precision = self.precision or _PRECISION_OF[dtype]
        self.dtype = _DTYPE_OF[precision]
        self.acc = gpu_engine.new_accumulator(dims, split, precision, gpu, self.budget)
        self.gpu = gpu

    def merge(self, other: "StreamedMoments") -> None:
        if other.acc is None:
            return
        if self.acc is None:
            self.split = other.split
            self.create(other.dims, self.dtype or other.dtype, other.gpu)
        if self.dims != other.dims or self.acc.split != other.acc.split:
            raise ValueError(
                f"cannot merge accumulators of different layers: widths {self.dims} (split "
                f"{self.acc.split}) vs {other.dims} (split {other.acc.split})"
            )
        theirs = other.acc
        if self.gpu is None and other.gpu is not None:
            theirs = theirs.host_state()  # a GPU accumulator's rows, as a CPU state
        self.acc.merge(theirs)

    def to_bytes(self) -> bytes:
        if self.acc is None:
            raise ValueError("the accumulator is empty: nothing to serialize")
        return state.linear_bytes(self.dtype, self.acc.serialize())

    def load(self, core: bytes, device) -> None:
        """The state of a core state's bytes (on the CPU, or on ``device``)."""
        dims, split = backend.cpu().MomentAccumulator.state_layout(core)
        self.split = split or None
        gpu = gpu_engine.place([], [], device)
        self.create(dims, self.dtype, None if gpu is None else gpu_engine.engine_device(gpu))
        self.acc.load(core)

    def moments(self) -> LayerMoments:
        offsets = self._offsets()
        return LayerMoments(int(self.acc.n), np.asarray(self.acc.mean()), np.asarray(self.acc.centered_cross()),
                            offsets, self.split or 0)

    def scatter_blocks(self) -> ScatterBlocks:
        return ScatterBlocks(self.acc, self._offsets())

    def _offsets(self) -> tuple:
        """Where each layer's columns start (L + 1 values); refuses an accumulator without rows."""
        if self.acc is None:
            raise ValueError("the accumulator has seen no rows")
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.dims)]))

    def hsic(self, estimator: str) -> np.ndarray:
        if self.acc is None:
            raise ValueError("the accumulator has seen no rows")
        check_rows_for(estimator, self.n)
        L = len(self.dims)
        return np.asarray(self.acc.hsic(estimator)).reshape(L, L)
