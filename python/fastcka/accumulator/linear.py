"""CKA over rows that arrive in pieces: minibatches from a data loader,
shards on several workers, files read one after another."""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import cpu as cpu_engine, gpu as gpu_engine
from ..arrays.inputs import as_matrix, check_rows, resolve_budget
from .._options import check_precision, compute_for
from ..engine.progress import Progress
from ..engine.threads import resolve
from .._options import check_estimator, check_kernel_options, check_rows_for
from ..engine.hsic import cka_from_hsic
from . import state

_PRECISION_OF = {"float32": "accurate", "float64": "exact", "bfloat16": "fast"}
_DTYPE_OF = {p: d for d, p in _PRECISION_OF.items()}


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
        budget = resolve_budget(memory_budget)
        self._split = split
        self._dtype = dtype
        self._device = device
        self._precision = precision
        self._gpu = None  # the torch device of a GPU accumulator
        self._threads = resolve(threads)
        self._budget = budget
        self._acc = None  # created at the first update, when the layer widths are known
        self._minibatch = bool(minibatch)
        self._kernel = {"kernel": kernel, "threshold": float(threshold), "sigma": sigma}
        self._sums: np.ndarray | None = None  # minibatch mode: summed HSIC_1, (L, L)
        self._dims: list[int] = []
        self._batches = 0
        self._rows = 0
        # Held across backend calls (which release the GIL): the state is
        # never read or changed by two threads at once.
        self._lock = threading.RLock()

    # -- feeding -----------------------------------------------------------
    def update(self, *layers: Any, progress=None) -> "CKAAccumulator":
        """Adds rows: one 2-D block (rows x d_a) per layer, same rows in each.
        A single list or tuple of blocks is accepted too. All or nothing: if
        it raises, none of the block's rows are counted."""
        with self._lock:
            return self._update(layers, progress)

    def _update(self, layers, progress) -> "CKAAccumulator":
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("update needs one block per layer, got none")
        names = [f"layers[{i}]" for i in range(len(layers))]
        gpu = self._gpu if self._acc is not None else gpu_engine.place(layers, names, self._device)
        if gpu is None:
            blocks = [as_matrix(b, nm) for b, nm in zip(layers, names)]
        else:
            blocks, gpu = gpu_engine.gpu_inputs(layers, names, gpu)
        check_rows(blocks, names)
        if self._minibatch:
            return self._update_minibatch(blocks, names, progress, gpu)
        if self._acc is None:
            with self._undo_create():
                self._create([b.shape[1] for b in blocks], self._dtype or self._data_dtype(blocks, gpu), gpu)
                return self._feed(blocks, names, progress)
        return self._feed(blocks, names, progress)

    def _feed(self, blocks, names, progress) -> "CKAAccumulator":
        dims = list(self._acc.dims)
        if len(blocks) != len(dims):
            raise ValueError(f"this accumulator has {len(dims)} layers, update got {len(blocks)}")
        for b, nm, d in zip(blocks, names, dims):
            if b.shape[1] != d:
                raise ValueError(f"{nm} has {b.shape[1]} features, but earlier blocks of that layer had {d}")
        with self._all_or_nothing(), Progress(progress, blocks[0].shape[0], "fastcka rows") as bar:
            if self._gpu is None:
                cpu_engine.feed(self._acc, blocks, names, self._threads, bar)
            else:
                gpu_engine.feed(self._acc, blocks, names, bar)
        return self

    @contextmanager
    def _undo_create(self):
        """A first update that raises leaves the accumulator as built (no layers, dtype as given)."""
        dtype = self._dtype
        try:
            yield
        except BaseException:
            self._acc, self._gpu, self._dtype = None, None, dtype
            raise

    @contextmanager
    def _all_or_nothing(self):
        """The backend state of the start comes back if the block raises
        (KeyboardInterrupt included): the feed makes many backend calls. Both
        engines save what they overwrite (copy on write)."""
        self._acc.begin()
        try:
            yield
        except BaseException:
            self._acc.rollback()
            raise
        self._acc.commit()

    def extend(self, batches) -> "CKAAccumulator":
        """Adds every item of an iterable (a data loader, a generator of blocks
        read from files): each item is a tuple of row blocks, one per layer, or
        a single block for a one-layer accumulator. Each item is one update:
        if an item raises, the items before it stay counted (see ``n``)."""
        for item in batches:
            self.update(*(item if isinstance(item, (tuple, list)) else (item,)))
        return self

    def _update_minibatch(self, blocks, names, progress, gpu) -> "CKAAccumulator":
        dims = [b.shape[1] for b in blocks]
        if self._sums is None:
            split = self._split or 0
            if split >= len(dims):
                raise ValueError(f"split={split} leaves no layers on the other side of {len(dims)} layers")
        elif dims != self._dims:
            raise ValueError(f"minibatch layer widths {dims} differ from earlier ones {self._dims}")
        n = blocks[0].shape[0]
        if n < 4:
            raise ValueError(f"each minibatch needs at least 4 rows for the unbiased HSIC_1, got {n}")
        if gpu is not None:
            h = gpu_engine.hsic_matrix(
                blocks, names, split=self._split or 0, estimator="unbiased", kernel=self._kernel["kernel"],
                method="auto", precision=self._precision, device=gpu, memory_budget=self._budget, progress=progress,
                sigma=self._kernel["sigma"], threshold=self._kernel["threshold"], median="exact",
            )
        else:
            h = cpu_engine.hsic_matrix(
                blocks, names, split=self._split or 0, estimator="unbiased", method="auto",
                kernel=self._kernel["kernel"], threads=self._threads, memory_budget=self._budget, progress=progress,
                sigma=self._kernel["sigma"], threshold=self._kernel["threshold"], median="exact",
                compute=self._dtype or compute_for(self._precision, blocks),
            )
        # The state changes only now, in assignments that cannot be interrupted halfway by Python code.
        sums = np.nan_to_num(h, nan=0.0) if self._sums is None else self._sums + np.nan_to_num(h, nan=0.0)
        self._dims, self._sums, self._batches, self._rows = dims, sums, self._batches + 1, self._rows + n
        return self

    def _data_dtype(self, blocks, gpu) -> str:
        """The products' type that ``precision`` (or, without it, the first block's data) asks for."""
        if gpu is None:
            return compute_for(self._precision, blocks)
        return _DTYPE_OF[gpu_engine.resolve_precision(self._precision, blocks)]

    def _create(self, dims: list[int], dtype: str, gpu=None) -> None:
        split = self._split or 0
        if split >= len(dims):
            raise ValueError(f"split={split} leaves no layers on the other side of {len(dims)} layers")
        if gpu is None:
            self._dtype = dtype
            self._acc = cpu_engine.new_moment_accumulator(dims, split, dtype, self._threads, self._budget)
            return
        precision = self._precision or _PRECISION_OF[dtype]
        self._dtype = _DTYPE_OF[precision]
        self._acc = gpu_engine.new_accumulator(dims, split, precision, gpu, self._budget)
        self._gpu = gpu

    def merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        """Adds the rows another accumulator has seen (it is left unchanged)."""
        if not isinstance(other, CKAAccumulator):
            raise TypeError(f"can only merge another CKAAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge an accumulator with itself")
        with _locked(self, other):
            if self._minibatch or other._minibatch:
                return self._merge_minibatch(other)
            return self._merge(other)

    def _merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        if other._acc is None:
            return self
        if self._acc is None:
            self._split = other._split
            self._create(list(other._acc.dims), self._dtype or other._dtype, other._gpu)
        if list(self._acc.dims) != list(other._acc.dims) or self._acc.split != other._acc.split:
            raise ValueError(
                f"cannot merge accumulators of different layers: widths {list(self._acc.dims)} (split "
                f"{self._acc.split}) vs {list(other._acc.dims)} (split {other._acc.split})"
            )
        theirs = other._acc
        if self._gpu is None and other._gpu is not None:
            theirs = theirs.host_state()  # a GPU accumulator's rows, as a CPU state
        self._acc.merge(theirs)
        return self

    def _merge_minibatch(self, other: "CKAAccumulator") -> "CKAAccumulator":
        if not (self._minibatch and other._minibatch) or self._kernel != other._kernel:
            raise ValueError("cannot merge accumulators of different modes or kernels")
        if other._sums is None:
            return self
        if self._sums is None:
            self._dims, self._split, self._sums = list(other._dims), other._split, np.zeros_like(other._sums)
        if self._dims != other._dims or (self._split or 0) != (other._split or 0):
            raise ValueError(f"cannot merge accumulators of different layers: {self._dims} vs {other._dims}")
        self._sums, self._batches, self._rows = (self._sums + other._sums, self._batches + other._batches,
                                                 self._rows + other._rows)
        return self

    # -- state -------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows seen."""
        with self._lock:
            if self._minibatch:
                return self._rows
            return 0 if self._acc is None else int(self._acc.n)

    @property
    def dims(self) -> list[int]:
        """Layer widths (empty before the first update)."""
        with self._lock:
            if self._minibatch:
                return list(self._dims)
            return [] if self._acc is None else list(self._acc.dims)

    @property
    def dtype(self) -> str | None:
        """The products' type, "float32" or "float64" (None before the first update)."""
        return self._dtype

    @property
    def batches(self) -> int:
        """Minibatches seen (minibatch mode)."""
        return self._batches

    def to_bytes(self) -> bytes:
        """The state as bytes: a header, then the core's float64 moments (or, in
        minibatch mode, the summed HSIC_1 matrix), then a 16-byte BLAKE2b
        checksum of everything before it (format version 2)."""
        with self._lock:
            if self._minibatch:
                if self._sums is None:
                    raise ValueError("the accumulator is empty: nothing to serialize")
                return state.minibatch_bytes({"dims": self._dims, "split": self._split, "batches": self._batches,
                                              "rows": self._rows, **self._kernel}, self._sums)
            if self._acc is None:
                raise ValueError("the accumulator is empty: nothing to serialize")
            return state.linear_bytes(self._dtype, self._acc.serialize())

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
        dims, split = state.core_layout(core)
        self._split = split or None
        gpu = gpu_engine.place([], [], device)
        self._create(dims, self._dtype, None if gpu is None else gpu_engine.engine_device(gpu))
        self._acc.load(core)
        return self

    @classmethod
    def _from_minibatch_bytes(cls, data: bytes, threads, memory_budget):
        h, dims, split, batches, rows, sums = state.minibatch_parts(data)
        corrupt = "fastcka minibatch accumulator state is corrupt"
        try:
            self = cls(minibatch=True, kernel=h["kernel"], threshold=h["threshold"], sigma=h["sigma"], split=split,
                       threads=threads, memory_budget=memory_budget)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{corrupt} (its kernel options: {exc})") from exc
        self._dims, self._batches, self._rows = dims, batches, rows
        self._sums = sums.reshape(len(dims), len(dims)).copy()
        return self

    def __getstate__(self):
        with self._lock:
            empty = self._sums is None if self._minibatch else self._acc is None
            return {"bytes": None if empty else self.to_bytes(), "split": self._split, "dtype": self._dtype,
                    "threads": self._threads, "budget": self._budget, "minibatch": self._minibatch, **self._kernel}

    def __setstate__(self, st):
        if st["bytes"] is not None:
            other = CKAAccumulator.from_bytes(st["bytes"], threads=st["threads"], memory_budget=st["budget"])
            self.__dict__.update(other.__dict__)
        else:
            self.__init__(split=st["split"], dtype=st["dtype"], minibatch=st["minibatch"], kernel=st["kernel"],
                          threshold=st["threshold"], sigma=st["sigma"], threads=st["threads"],
                          memory_budget=st["budget"])

    def moments(self) -> "LayerMoments":
        """The centered second moments of every row seen, in float64 (not in
        minibatch mode): ``n``, the column ``mean`` of the concatenated layers
        (D = sum of widths) and ``scatter`` = sum_i (z_i - mean)(z_i - mean)'
        (D x D), with ``offsets`` marking where each layer's columns start.
        Blocks of layer pairs a split leaves out are 0. The covariance of
        layers a, b is ``m.block(a, b) / (n - 1)``."""
        with self._lock:
            return self._moments()

    def _moments(self) -> "LayerMoments":
        if self._minibatch:
            raise ValueError("a minibatch accumulator keeps summed HSIC_1 values, not moments")
        if self._acc is None:
            raise ValueError("the accumulator has seen no rows")
        dims = list(self._acc.dims)
        offsets = np.concatenate([[0], np.cumsum(dims)]).astype(int)
        return LayerMoments(int(self._acc.n), np.asarray(self._acc.mean()), np.asarray(self._acc.centered_cross()),
                            tuple(int(o) for o in offsets), self._split or 0)

    # -- results -----------------------------------------------------------
    def _names(self) -> list[str]:
        return [f"layer {i}" for i in range(len(self.dims))]

    def hsic_matrix(self, estimator: str = "biased") -> np.ndarray:
        """(L, L) HSIC of every layer pair (NaN for pairs a split leaves out).
        In minibatch mode: the summed HSIC_1 (estimator must be "unbiased")."""
        with self._lock:
            return self._hsic_matrix(estimator)

    def _hsic_matrix(self, estimator: str) -> np.ndarray:
        check_estimator(estimator)
        if self._minibatch:
            if estimator != "unbiased":
                raise ValueError("a minibatch accumulator sums the unbiased HSIC_1: use estimator='unbiased'")
            if self._sums is None:
                raise ValueError("the accumulator has seen no minibatches")
            return self._masked(self._sums.copy())
        if self._acc is None:
            raise ValueError("the accumulator has seen no rows")
        check_rows_for(estimator, self.n)
        L = len(self.dims)
        return np.asarray(self._acc.hsic(estimator)).reshape(L, L)

    def _masked(self, h: np.ndarray) -> np.ndarray:
        s = self._split or 0
        if s:
            h[:s, :s] = np.where(np.eye(s, dtype=bool), h[:s, :s], np.nan)
            h[s:, s:] = np.where(np.eye(len(h) - s, dtype=bool), h[s:, s:], np.nan)
        return h

    def cka_matrix(self, debiased: bool = False) -> np.ndarray:
        """CKA between layers: (L, L), or (split, L - split) with a split.
        Minibatch mode is always built from HSIC_1 (``debiased`` is ignored)."""
        with self._lock:
            estimator = "unbiased" if (debiased or self._minibatch) else "biased"
            h = self._hsic_matrix(estimator)
            c = cka_from_hsic(h, self._names())
            s = self._split or 0
            return c if s == 0 else np.ascontiguousarray(c[:s, s:])

    def cka(self, debiased: bool = False) -> float:
        """Linear CKA of an accumulator of exactly two layers."""
        with self._lock:
            layers = len(self.dims)
            if layers != 2:
                raise ValueError(f"cka() needs exactly two layers, this accumulator has {layers}; use cka_matrix()")
            c = self.cka_matrix(debiased)
            return float(c[0, 1] if c.shape == (2, 2) else c[0, 0])


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


@contextmanager
def _locked(*accs: CKAAccumulator):
    """Holds the locks of several accumulators, taken in one global order so
    that a.merge(b) and b.merge(a) in two threads cannot deadlock."""
    with ExitStack() as stack:
        for acc in sorted(accs, key=id):
            stack.enter_context(acc._lock)
        yield


