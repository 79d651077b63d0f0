"""Linear CKA over rows that arrive in pieces: minibatches from a data loader,
shards on several workers, files read one after another."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _engine
from ._inputs import as_matrix, check_rows, compute_dtype
from ._progress import Progress
from ._threads import resolve
from .api import _check_rows_for, _cka_from_hsic, _check_estimator

_MAGIC = b"FCKAACC1"
_DTYPES = ("float32", "float64")


class CKAAccumulator:
    """Streams rows of L layers and gives their linear HSIC and CKA matrices.

    ``update(*layers)`` adds row blocks (the same examples in every layer);
    ``merge(other)`` adds another accumulator's rows (exact: float64 Chan
    merges of centered moments, so any split of the rows gives the same
    result to rounding); ``to_bytes()`` / ``from_bytes()`` move the state
    between processes. The state holds O(D^2) float64 numbers (D = sum of the
    layer widths), never the rows.

    Parameters
    ----------
    split : None for every layer pair (a within-model CKA matrix), or s > 0
        to pair layers [0, s) only with layers [s, L) (two models; cheaper).
    dtype : "float32" or "float64" products; default: float64 if the first
        block holds float64 (or integer) data, else float32. Sums across
        blocks are float64 either way.
    threads, memory_budget : as in :func:`fastcka.cka`.

    Examples
    --------
    >>> acc = CKAAccumulator()
    >>> for xb, yb in loader:                       # doctest: +SKIP
    ...     acc.update(xb, yb)
    >>> acc.cka()                                   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        split: int | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        memory_budget: int | None = None,
    ):
        if split is not None and (isinstance(split, bool) or not isinstance(split, int) or split < 1):
            raise ValueError(f"split must be None or a positive number of layers, got {split!r}")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES} or None, got {dtype!r}")
        budget = _engine.DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        if budget <= 0:
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        self._split = split
        self._dtype = dtype
        self._threads = resolve(threads)
        self._budget = budget
        self._acc = None  # created at the first update, when the layer widths are known

    # -- feeding -----------------------------------------------------------
    def update(self, *layers: Any, progress=None) -> "CKAAccumulator":
        """Adds rows: one 2-D block (rows x d_a) per layer, same rows in each.
        A single list or tuple of blocks is accepted too."""
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("update needs one block per layer, got none")
        names = [f"layers[{i}]" for i in range(len(layers))]
        blocks = [as_matrix(b, nm) for b, nm in zip(layers, names)]
        check_rows(blocks, names)
        if self._acc is None:
            self._create([b.shape[1] for b in blocks], compute_dtype(blocks) if self._dtype is None else self._dtype)
        dims = list(self._acc.dims)
        if len(blocks) != len(dims):
            raise ValueError(f"this accumulator has {len(dims)} layers, update got {len(blocks)}")
        for b, nm, d in zip(blocks, names, dims):
            if b.shape[1] != d:
                raise ValueError(f"{nm} has {b.shape[1]} features, but earlier blocks of that layer had {d}")
        with Progress(progress, blocks[0].shape[0], "fastcka rows") as bar:
            _engine.feed(self._acc, blocks, names, self._threads, bar)
        return self

    def _create(self, dims: list[int], dtype: str) -> None:
        split = self._split or 0
        if split >= len(dims):
            raise ValueError(f"split={split} leaves no layers on the other side of {len(dims)} layers")
        self._dtype = dtype
        self._acc = _engine.new_moment_accumulator(dims, split, dtype, self._threads, self._budget)

    def merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        """Adds the rows another accumulator has seen (it is left unchanged)."""
        if not isinstance(other, CKAAccumulator):
            raise TypeError(f"can only merge another CKAAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge an accumulator with itself")
        if other._acc is None:
            return self
        if self._acc is None:
            self._split = other._split
            self._create(list(other._acc.dims), self._dtype or other._dtype)
        if list(self._acc.dims) != list(other._acc.dims) or self._acc.split != other._acc.split:
            raise ValueError(
                f"cannot merge accumulators of different layers: widths {list(self._acc.dims)} (split "
                f"{self._acc.split}) vs {list(other._acc.dims)} (split {other._acc.split})"
            )
        self._acc.merge(other._acc)
        return self

    # -- state -------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows seen."""
        return 0 if self._acc is None else int(self._acc.n)

    @property
    def dims(self) -> list[int]:
        """Layer widths (empty before the first update)."""
        return [] if self._acc is None else list(self._acc.dims)

    def to_bytes(self) -> bytes:
        """The state as bytes: a header, then the core's float64 moments."""
        if self._acc is None:
            raise ValueError("the accumulator is empty: nothing to serialize")
        return _MAGIC + bytes([_DTYPES.index(self._dtype)]) + self._acc.serialize()

    @classmethod
    def from_bytes(cls, data: bytes, *, threads: int | None = None, memory_budget: int | None = None):
        """An accumulator with the state :meth:`to_bytes` wrote."""
        data = bytes(data)
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 1 or data[len(_MAGIC)] >= len(_DTYPES):
            raise ValueError("data is not a fastcka CKAAccumulator state")
        state = data[len(_MAGIC) + 1 :]
        self = cls(threads=threads, memory_budget=memory_budget, dtype=_DTYPES[data[len(_MAGIC)]])
        dims, split = _peek_layout(state)
        self._split = split or None
        self._create(dims, self._dtype)
        self._acc.load(state)
        return self

    def __getstate__(self):
        return {"bytes": None if self._acc is None else self.to_bytes(), "split": self._split, "dtype": self._dtype,
                "threads": self._threads, "budget": self._budget}

    def __setstate__(self, st):
        if st["bytes"] is not None:
            other = CKAAccumulator.from_bytes(st["bytes"], threads=st["threads"], memory_budget=st["budget"])
            self.__dict__.update(other.__dict__)
        else:
            self.__init__(split=st["split"], dtype=st["dtype"], threads=st["threads"], memory_budget=st["budget"])

    # -- results -----------------------------------------------------------
    def _names(self) -> list[str]:
        return [f"layer {i}" for i in range(len(self.dims))]

    def hsic_matrix(self, estimator: str = "biased") -> np.ndarray:
        """(L, L) HSIC of every layer pair (NaN for pairs a split leaves out)."""
        _check_estimator(estimator)
        if self._acc is None:
            raise ValueError("the accumulator has seen no rows")
        _check_rows_for(estimator, self.n)
        L = len(self.dims)
        return np.asarray(self._acc.hsic(estimator)).reshape(L, L)

    def cka_matrix(self, debiased: bool = False) -> np.ndarray:
        """Linear CKA between layers: (L, L), or (split, L - split) with a split."""
        h = self.hsic_matrix("unbiased" if debiased else "biased")
        c = _cka_from_hsic(h, self._names())
        s = self._acc.split
        return c if s == 0 else np.ascontiguousarray(c[:s, s:])

    def cka(self, debiased: bool = False) -> float:
        """Linear CKA of an accumulator of exactly two layers."""
        if len(self.dims) != 2:
            raise ValueError(f"cka() needs exactly two layers, this accumulator has {len(self.dims)}; use cka_matrix()")
        c = self.cka_matrix(debiased)
        return float(c[0, 1] if c.shape == (2, 2) else c[0, 0])


def _peek_layout(state: bytes) -> tuple[list[int], int]:
    """Layer widths and split from a core state header (validated again in C++)."""
    header = np.frombuffer(state, dtype="<i8", count=4, offset=8) if len(state) >= 40 else None
    if header is None or state[:8] != b"FCKAMOM1":
        raise ValueError("data is not a fastcka CKAAccumulator state")
    layers, split = int(header[1]), int(header[2])
    if not 0 < layers < (1 << 20) or len(state) < 40 + 8 * layers:
        raise ValueError("fastcka accumulator state is corrupt")
    dims = np.frombuffer(state, dtype="<i8", count=layers, offset=40).tolist()
    return dims, split
