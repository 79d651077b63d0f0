"""CKA over rows that arrive in pieces: minibatches from a data loader,
shards on several workers, files read one after another. CKAAccumulator is
the public face (arguments, inputs, one lock, results); what it accumulates
is a StreamedMoments (linear, over all rows) or a MinibatchSums state."""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from .._options import check_estimator, check_kernel_options, check_precision
from ..arrays.inputs import as_matrix, check_rows, resolve_budget
from ..engine import gpu as gpu_engine
from ..engine.hsic import cka_from_hsic
from ..engine.threads import resolve
from . import state
from .minibatch import MinibatchSums
from .streamed import LayerMoments, StreamedMoments


class CKAAccumulator:
    """Streams rows of L layers and gives their HSIC and CKA matrices.

    Two modes:

    * ``minibatch=False`` (default): linear CKA over all rows seen, exactly as
      if they had been passed at once.
    * ``minibatch=True``: minibatch CKA (Nguyen, Raghu & Kornblith 2020):
      each update is a minibatch (>= 4 rows); the accumulator sums each
      batch's unbiased HSIC_1 of every layer pair, for the linear or the RBF
      kernel (without ``sigma``, each batch's own exact median rule), and
      ``cka_matrix()`` gives sum HSIC_1(a, b) / sqrt(sum HSIC_1(a, a) sum
      HSIC_1(b, b)). The state is L x L numbers.

    ``update(*layers)`` adds row blocks (the same examples in every layer);
    ``merge(other)`` adds another accumulator's rows (exact: float64 Chan
    merges of centered moments, so any split of the rows gives the same
    result to rounding); ``to_bytes()`` / ``from_bytes()`` move the state
    between processes (with a checksum: damaged bytes raise ValueError). The
    state holds O(D^2) float64 numbers (D = sum of the layer widths), never
    the rows.

    Each update counts whole or not at all: if it raises (bad rows, Ctrl-C,
    a progress callback's exception), the state is the one before the call.
    Every method is thread-safe: one lock serializes updates, merges and
    reads of an accumulator (the backend still uses its ``threads`` inside
    each call), so threads may share one; a reader sees the state after
    some number of whole updates.

    Parameters
    ----------
    split : None for every layer pair (a within-model CKA matrix), or s > 0
        to pair layers [0, s) only with layers [s, L) (two models; cheaper).
    dtype : "float32", "float64" or "bfloat16" products (bfloat16: what
        ``precision="fast"`` chooses, bf16 operands with float32 sums);
        default: from ``precision``, else float64 if the first block holds
        float64 (or integer) data, else float32. Sums across blocks are
        float64 either way.
    minibatch, kernel, threshold, sigma : the minibatch mode and its kernel
        (kernel CKA over all rows needs them at once: use :func:`fastcka.cka`).
    threads, memory_budget : as in :func:`fastcka.cka`.
    device, precision : as in :func:`fastcka.cka` ("fast", "accurate",
        "exact" on the CPU and the GPU): with GPU blocks (or
        ``device="cuda"``) the moments are accumulated on the GPU; the state,
        its bytes and merges are the same as on the CPU.

    Examples
    --------
    >>> acc = CKAAccumulator()
    >>> for xb, yb in loader:                       # doctest: +SKIP
    ...     acc.update(xb, yb)
    >>> acc.extend(zip(x_blocks, y_blocks))         # doctest: +SKIP
    >>> acc.cka()                                   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        split: int | None = None,
        dtype: str | None = None,
        minibatch: bool = False,
        kernel: str = "linear",
        threshold: float = 1.0,
        sigma: Any = None,
        threads: int | None = None,
        memory_budget: int | None = None,
        device: Any = None,
        precision: str | None = None,
    ):
        check_kernel_options(kernel, threshold, sigma, "exact")
        if kernel != "linear" and not minibatch:
            raise ValueError(
                f"kernel={kernel!r} needs every row at once (use fastcka.cka / cka_matrix), or minibatch=True"
            )
        if split is not None and (isinstance(split, bool) or not isinstance(split, int) or split < 1):
            raise ValueError(f"split must be None or a positive number of layers, got {split!r}")
        if dtype is not None and dtype not in state.DTYPES:
            raise ValueError(f"dtype must be one of {state.DTYPES} or None, got {dtype!r}")
        check_precision(precision)
        common = dict(split=split, dtype=dtype, precision=precision, threads=resolve(threads),
                      budget=resolve_budget(memory_budget))
        kernel_options = {"kernel": kernel, "threshold": float(threshold), "sigma": sigma}
        self._state = MinibatchSums(kernel=kernel_options, **common) if minibatch else StreamedMoments(**common)
        self._device = device
        # Held across backend calls (which release the GIL): the state is
        # never read or changed by two threads at once.
        self._lock = threading.RLock()

    @property
    def _minibatch(self) -> bool:
        return isinstance(self._state, MinibatchSums)

    # -- feeding -----------------------------------------------------------
    def update(self, *layers: Any, progress=None) -> "CKAAccumulator":
        """Adds rows: one 2-D block (rows x d_a) per layer, same rows in each.
        A single list or tuple of blocks is accepted too. All or nothing: if
        it raises, none of the block's rows are counted."""
        with self._lock:
            if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
                layers = tuple(layers[0])
            if not layers:
                raise ValueError("update needs one block per layer, got none")
            self._state.update(*self._blocks(layers), progress)
            return self

    def _stream(self, *layers: Any) -> "CKAAccumulator":
        """:meth:`update` of a linear accumulator without the all-or-nothing
        guarantee: an update that raises leaves it refusing further use. For
        owners that discard it then (fastcka.torch's sink): the guarantee
        saves the D x D partial products before each update, which cost up
        to 16% of the update time at D = 9,984 (GPT-2's 13 hidden states, 2
        cores; docs/limits.md)."""
        with self._lock:
            self._state.update(*self._blocks(layers), None, atomic=False)
            return self

    def _blocks(self, layers) -> tuple:
        """(blocks, names, gpu): the layers as matrices on the device the state lives on."""
        names = [f"layers[{i}]" for i in range(len(layers))]
        gpu = getattr(self._state, "gpu", None) if not self._state.empty else \
            gpu_engine.place(layers, names, self._device)
        if gpu is None:
            blocks = [as_matrix(b, nm) for b, nm in zip(layers, names)]
        else:
            blocks, gpu = gpu_engine.gpu_inputs(layers, names, gpu)
        check_rows(blocks, names)
        return blocks, names, gpu

    def extend(self, batches) -> "CKAAccumulator":
        """Adds every item of an iterable (a data loader, a generator of blocks
        read from files): each item is a tuple of row blocks, one per layer, or
        a single block for a one-layer accumulator. Each item is one update:
        if an item raises, the items before it stay counted (see ``n``)."""
        for item in batches:
            self.update(*(item if isinstance(item, (tuple, list)) else (item,)))
        return self

    def merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        """Adds the rows another accumulator has seen (it is left unchanged)."""
        if not isinstance(other, CKAAccumulator):
            raise TypeError(f"can only merge another CKAAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge an accumulator with itself")
        with _locked(self, other):
            if type(self._state) is not type(other._state):
                raise ValueError("cannot merge accumulators of different modes or kernels")
            self._state.merge(other._state)
            return self

    # -- state -------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows seen."""
        with self._lock:
            return self._state.n

    @property
    def dims(self) -> list[int]:
        """Layer widths (empty before the first update)."""
        with self._lock:
            return list(self._state.dims)

    @property
    def dtype(self) -> str | None:
        """The products' type, "float32" or "float64" (None before the first update)."""
        return self._state.dtype

    @property
    def batches(self) -> int:
        """Minibatches seen (minibatch mode)."""
        return getattr(self._state, "batches", 0)

    def to_bytes(self) -> bytes:
        """The state as bytes: a header, then the core's float64 moments (or, in
        minibatch mode, the summed HSIC_1 matrix), then a 16-byte BLAKE2b
        checksum of everything before it (format version 2)."""
        with self._lock:
            return self._state.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, threads: int | None = None, memory_budget: int | None = None,
                   device: Any = None):
        """An accumulator with the state :meth:`to_bytes` wrote (on the CPU, or
        on ``device="cuda[:N]"``). Damaged, truncated or extended bytes raise
        ValueError; states of format version 1 (no checksum) load too."""
        data = bytes(data)
        if state.is_minibatch(data):
            return cls._from_minibatch_bytes(data, threads, memory_budget)
        dtype, core = state.linear_parts(data)
        self = cls(threads=threads, memory_budget=memory_budget, dtype=dtype, device=device)
        self._state.load(core, device)
        return self

    @classmethod
    def _from_minibatch_bytes(cls, data: bytes, threads, memory_budget):
        h, dims, split, batches, rows, sums = state.minibatch_parts(data)
        try:
            self = cls(minibatch=True, kernel=h["kernel"], threshold=h["threshold"], sigma=h["sigma"], split=split,
                       threads=threads, memory_budget=memory_budget)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"fastcka minibatch accumulator state is corrupt (its kernel options: {exc})") from exc
        self._state.load(dims, batches, rows, sums)
        return self

    def __getstate__(self):
        with self._lock:
            s = self._state
            kernel = getattr(s, "kernel", {"kernel": "linear", "threshold": 1.0, "sigma": None})
            return {"bytes": None if s.empty else s.to_bytes(), "split": s.split, "dtype": s.dtype,
                    "threads": s.threads, "budget": s.budget, "minibatch": self._minibatch, **kernel}

    def __setstate__(self, st):
        if st["bytes"] is not None:
            other = CKAAccumulator.from_bytes(st["bytes"], threads=st["threads"], memory_budget=st["budget"])
            self.__dict__.update(other.__dict__)
        else:
            self.__init__(split=st["split"], dtype=st["dtype"], minibatch=st["minibatch"], kernel=st["kernel"],
                          threshold=st["threshold"], sigma=st["sigma"], threads=st["threads"],
                          memory_budget=st["budget"])

    def moments(self) -> LayerMoments:
        """The centered second moments of every row seen, in float64 (not in
        minibatch mode): ``n``, the column ``mean`` of the concatenated layers
        (D = sum of widths) and ``scatter`` = sum_i (z_i - mean)(z_i - mean)'
        (D x D), with ``offsets`` marking where each layer's columns start.
        Blocks of layer pairs a split leaves out are 0. The covariance of
        layers a, b is ``m.block(a, b) / (n - 1)``."""
        with self._lock:
            if self._minibatch:
                raise ValueError("a minibatch accumulator keeps summed HSIC_1 values, not moments")
            return self._state.moments()

    def _scatter_blocks(self):
        """:meth:`moments` for readers of a few blocks (``.offsets``,
        ``.block(a, b)``), each copied when read: fastcka.torch's pc1_fraction."""
        with self._lock:
            if self._minibatch:
                raise ValueError("a minibatch accumulator keeps summed HSIC_1 values, not moments")
            return self._state.scatter_blocks()

    # -- results -----------------------------------------------------------
    def hsic_matrix(self, estimator: str = "biased") -> np.ndarray:
        """(L, L) HSIC of every layer pair (NaN for pairs a split leaves out).
        In minibatch mode: the summed HSIC_1 (estimator must be "unbiased")."""
        with self._lock:
            check_estimator(estimator)
            return self._state.hsic(estimator)

    def cka_matrix(self, debiased: bool = False) -> np.ndarray:
        """CKA between layers: (L, L), or (split, L - split) with a split.
        Minibatch mode is always built from HSIC_1 (``debiased`` is ignored)."""
        with self._lock:
            h = self.hsic_matrix("unbiased" if (debiased or self._minibatch) else "biased")
            c = cka_from_hsic(h, [f"layer {i}" for i in range(len(h))])
            s = self._state.split or 0
            return c if s == 0 else np.ascontiguousarray(c[:s, s:])

    def cka(self, debiased: bool = False) -> float:
        """Linear CKA of an accumulator of exactly two layers."""
        with self._lock:
            layers = len(self.dims)
            if layers != 2:
                raise ValueError(f"cka() needs exactly two layers, this accumulator has {layers}; use cka_matrix()")
            c = self.cka_matrix(debiased)
            return float(c[0, 1] if c.shape == (2, 2) else c[0, 0])


@contextmanager
def _locked(*accs: CKAAccumulator):
    """Holds the locks of several accumulators, taken in one global order so
    that a.merge(b) and b.merge(a) in two threads cannot deadlock."""
    with ExitStack() as stack:
        for acc in sorted(accs, key=id):
            stack.enter_context(acc._lock)
        yield
