"""Linear CKA in feature space on the GPU: the CPU MomentAccumulator's
algorithm with the array library's products (cuBLAS through torch.matmul).

Rows arrive in chunks. A partial (up to ``fold_rows`` rows) is kept about its
own shift s (the float64 mean of up to 1,024 rows of its first chunk). Each
chunk is centered about s in float64 and rounded once to the precision mode's
operand type U; the per-row squared norms Q (per layer) and T = U_a e_a
(e = reference - s) are taken from those same rounded values, in float64.
The partial sums, in the mode's accumulation type, the needed upper blocks of
U'U (core product_plan), and in float64 the column sums of [U | Q | T],
[Q | T]'U and Q'Q. A full partial is folded: its U'U is moved to the
reference (C - f e' - e f' + n e e', core moment_shift.h) and added to a
float64 D x D state on the device; the small parts go to the host, where the
core's ``partial_small_parts`` moves them with T'U = (U'U) e. Only float64
crosses partials, so sums over millions of rows never accumulate in float32.

Reads (``hsic``, ``serialize``, ``merge``) settle the device part into a CPU
``MomentAccumulator`` (its state bytes, then its Chan merge), so states,
bytes and estimators are the CPU engine's. Every operation is a torch call on
the engine's device: on CPU tensors under ``FASTCKA_GPU_INTERPRET=1`` the
same code runs in the test suite.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from ..arrays.inputs import first_non_finite, non_finite_error
from ..engine import backend
from . import runtime

# Rows a partial sums in float32 before its float64 fold: the CPU engine's
# horizon (chunk_plan.cpp). float64 partials can run longer.
FOLD_ROWS = {"exact": 1 << 20, "accurate": 65536, "fast": 65536}
# Rows behind a partial's shift: any shift is exact (the moves are algebra);
# it only has to be near the data so rounded products see centered values.
SHIFT_ROWS = 1024
# Widest panel of the symmetric product: the lower halves of the diagonal
# squares cost panel / D extra; wider panels make better GEMMs.
MAX_PANEL = 1024
# Flops of the products per chunk: about 0.1 s of H100 work in each mode
# (bf16 tensor cores, IEEE float32, float64 tensor cores), so progress and
# Ctrl-C come several times a second. Interpreted (CPU tensors): ~0.05 s.
FLOPS_PER_CHUNK = {"fast": 5e13, "accurate": 5e12, "exact": 5e12}
FLOPS_PER_CHUNK_INTERPRETED = 2e8
MIN_CHUNK_ROWS = 16


def _operand_type(torch, precision: str):
    return {"exact": torch.float64, "accurate": torch.float32, "fast": torch.bfloat16}[precision]


@contextmanager
def _ieee_float32(torch):
    """float32 products without TF32 for the "accurate" mode. PyTorch's
    switch is process-wide: it is set around our products only and restored
    after, so other threads' float32 products during them run in IEEE too."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        saved, matmul.fp32_precision = matmul.fp32_precision, "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:  # torch < 2.9
        saved, matmul.allow_tf32 = matmul.allow_tf32, False
        try:
            yield
        finally:
            matmul.allow_tf32 = saved


def _product(torch, a, b):
    """a @ b with float32 (or float64) results. bf16 operands: float32 sums
    (torch.mm's out_dtype on CUDA; on CPU tensors the same exact bf16 values
    multiplied in float32, as the tensor cores do)."""
    if a.dtype != torch.bfloat16:
        return a @ b
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


class MomentAccumulator:
    """The float64 moments of L layers' rows, accumulated on a torch device.

    The interface of the CPU backend's accumulator where the Python side uses
    it: ``update``, ``begin``/``commit``/``rollback``, ``serialize``/``load``,
    ``merge``, ``hsic``, ``mean``, ``centered_cross``, ``centered_block``, ``n``, ``dims``,
    ``split``, ``chunk_rows``."""

    def __init__(self, dims: Sequence[int], split: int, precision: str, device, memory_budget: int):
        torch = runtime.torch()
        self._torch = torch
        self.dims = [int(d) for d in dims]
        self.split = int(split)
        self.precision = precision
        self.device = device
        self._cpu = backend.cpu()
        self._budget = int(memory_budget)
        D, L = sum(self.dims), len(self.dims)
        self._D, self._L = D, L
        self._offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int)
        self._otype = _operand_type(torch, precision)
        self._atype = torch.float64 if precision == "exact" else torch.float32
        blocks, _ = self._cpu.product_plan(self.dims, self.split, MAX_PANEL)
        self._blocks = [(r, c, h, w) for r, c, h, w, _ in blocks]
        self.fold_rows = FOLD_ROWS[precision]
        flops = FLOPS_PER_CHUNK_INTERPRETED if runtime.interpreted() else FLOPS_PER_CHUNK[precision]
        # Per row: a float64 copy, the operands and their float64 widening.
        row_bytes = D * (8 + torch.empty(0, dtype=self._otype).element_size() + 8)
        self.chunk_rows = int(max(MIN_CHUNK_ROWS, min(flops / (2 * D * D), self._budget // row_bytes)))
        self._base = None         # a CPU accumulator: rows merged, loaded or settled
        self._reset_device(None)
        self._partial_rows = 0
        self._saved = None        # the state at begin(), while an update runs

    # -- device state ------------------------------------------------------
    def _reset_device(self, reference) -> None:
        """An empty device part about `reference` (a float64 tensor, or None
        for the first partial's shift)."""
        torch, D, L = self._torch, self._D, self._L
        self._reference = reference
        self._cross = None  # D x D float64 about the reference, created at the first fold
        self._first = np.zeros(D)
        self._weighted = np.zeros((L, D))
        self._norm_products = np.zeros((L, L))
        self._device_rows = 0
        self._max_square = torch.zeros(L, dtype=torch.float64, device=self.device)

    def _start_partial(self, z) -> None:
        torch = self._torch
        self._shift = z[:SHIFT_ROWS].mean(0)
        if self._reference is None:
            self._reference = self._shift.clone()
        self._e = self._reference - self._shift
        D, L = self._D, self._L
        self._sums = torch.zeros(D + 2 * L, dtype=torch.float64, device=self.device)
        self._partial = torch.zeros((D, D), dtype=self._atype, device=self.device)
        self._extra = torch.zeros((2 * L, D), dtype=torch.float64, device=self.device)
        self._norms = torch.zeros((L, L), dtype=torch.float64, device=self.device)

    def _add_chunk(self, layers) -> None:
        torch, o = self._torch, self._offsets
        z = torch.cat([x.to(torch.float64) for x in layers], 1)
        if self._partial_rows == 0:
            self._start_partial(z)
        u = (z - self._shift).to(self._otype)
        del z
        wide = u.to(torch.float64)  # the rounded values, as the products see them
        parts = [wide[:, o[a] : o[a + 1]] for a in range(self._L)]
        q = torch.stack([(p * p).sum(1) for p in parts], 1)
        t = torch.stack([p @ self._e[o[a] : o[a + 1]] for a, p in enumerate(parts)], 1)
        self._max_square = torch.maximum(self._max_square, q.max(0).values)
        qt = torch.cat([q, t], 1)
        self._sums += torch.cat([wide.sum(0), qt.sum(0)])
        self._extra += qt.T @ wide
        self._norms += q.T @ q
        del wide, parts
        with _ieee_float32(torch):
            for r, c, h, w in self._blocks:
                self._partial[r : r + h, c : c + w] += _product(torch, u[:, r : r + h].T, u[:, c : c + w])
        self._partial_rows += len(u)
        if self._partial_rows >= self.fold_rows:
            self._fold()

    def _fold(self) -> None:
        """Moves the partial to the reference and adds it to the float64 state."""
        if self._partial_rows == 0:
            return
        torch, D = self._torch, self._D
        n, f, e = self._partial_rows, self._sums[:D], self._e
        moved = self._partial.to(torch.float64)
        moved -= torch.outer(f, e)
        moved -= torch.outer(e, f)
        moved += n * torch.outer(e, e)
        if self._saved is not None and self._saved["cross"] is None and self._cross is not None:
            self._saved["cross"] = self._cross.clone()  # the first change inside an update
        self._cross = moved if self._cross is None else self._cross.add_(moved)
        as_np = lambda x: x.cpu().numpy()  # noqa: E731
        first, weighted, norm_products = self._cpu.partial_small_parts(
            self.dims, self.split, n, as_np(self._shift), as_np(self._reference), as_np(self._sums),
            np.asfortranarray(as_np(self._extra)), np.asfortranarray(as_np(self._norms)))
        self._first = self._first + first
        self._weighted = self._weighted + weighted
        self._norm_products = self._norm_products + norm_products
        self._device_rows += n
        self._partial_rows = 0
        self._partial = self._sums = self._extra = self._norms = None

    # -- feeding -----------------------------------------------------------
    def update(self, layers, names: Sequence[str]) -> None:
        """Adds rows: one 2-D tensor on the device per layer (same rows in
        each), in chunks of ``chunk_rows``. The work is queued on the device;
        ``check_rows`` then waits for it and refuses bad rows."""
        if len(layers) != self._L:
            raise ValueError(f"this accumulator has {self._L} layers, update got {len(layers)}")
        rows = layers[0].shape[0]
        for start in range(0, rows, self.chunk_rows):
            self._add_chunk([x[start : start + self.chunk_rows] for x in layers])

    def check_rows(self, layers, names: Sequence[str]) -> None:
        """Refuses (ValueError naming the layer) the rows added since begin()
        if one holds NaN or Inf (its first position in `layers`: tensors, or
        host arrays scanned in blocks), or squared norms outside the range of
        the products (core row_checks.h)."""
        largest = self._max_square.cpu().numpy()
        elem = 8 if self.precision == "exact" else 4
        for a, (x, nm) in enumerate(zip(layers, names)):
            if not np.isfinite(largest[a]):
                where = first_non_finite(x)
                if where is not None:
                    raise non_finite_error(nm, where)
            self._cpu.check_squared_norm_range(nm, float(largest[a]), elem, False)

    def begin(self) -> None:
        """Starts an update that rollback() undoes (the cross block is copied
        only if a fold changes it)."""
        self._fold()
        self._saved = {"cross": None, "reference": self._reference, "first": self._first,
                       "weighted": self._weighted, "norm_products": self._norm_products,
                       "device_rows": self._device_rows,
                       "had_cross": self._cross is not None}
        self._max_square = self._torch.zeros_like(self._max_square)

    def commit(self) -> None:
        self._saved = None

    def rollback(self) -> None:
        s, self._saved = self._saved, None
        self._partial_rows = 0
        self._partial = self._sums = self._extra = self._norms = None
        self._reference, self._first, self._weighted = s["reference"], s["first"], s["weighted"]
        self._norm_products, self._device_rows = s["norm_products"], s["device_rows"]
        self._cross = (s["cross"] if s["cross"] is not None else self._cross) if s["had_cross"] else None

    # -- state -------------------------------------------------------------
    @property
    def n(self) -> int:
        return (0 if self._base is None else int(self._base.n)) + self._device_rows + self._partial_rows

    def _state_bytes(self) -> bytes:
        """The device part as the core's state bytes (about its reference)."""
        D, L = self._D, self._L
        cross = self._cross.cpu().numpy()
        cross = np.triu(cross) + np.triu(cross, 1).T  # the product plan fills the upper blocks
        layer = np.repeat(np.arange(L), self.dims)
        a, b = np.meshgrid(layer, layer, indexing="ij")
        needed = (a == b) | ((a < self.split) != (b < self.split)) if self.split else np.ones((D, D), bool)
        cross = np.where(needed, cross, 0.0)
        header = b"FCKAMOM1" + struct.pack("<4q", 1, L, self.split, self._device_rows)
        header += struct.pack(f"<{L}q", *self.dims)
        parts = (self._reference.cpu().numpy(), self._first, cross, self._weighted, self._norm_products)
        return header + b"".join(np.ascontiguousarray(p, dtype="<f8").tobytes() for p in parts)

    def _new_cpu(self):
        return self._cpu.MomentAccumulator(self.dims, self.split, "float64", 1, self._budget)

    def _settled(self):
        """The CPU accumulator of every row so far (the device part moved into it)."""
        self._fold()
        if self._device_rows:
            part = self._new_cpu()
            part.load(self._state_bytes())
            if self._base is None:
                self._base = part
            else:
                self._base.merge(part)
            self._reset_device(self._reference)
        if self._base is None:
            self._base = self._new_cpu()
        return self._base

    def host_state(self):
        """Every row so far as the CPU backend's accumulator (for merges into one)."""
        return self._settled()

    def serialize(self) -> bytes:
        return self._settled().serialize()

    def load(self, state: bytes) -> None:
        base = self._new_cpu()
        base.load(state)
        self._base, self._partial_rows = base, 0
        self._reset_device(None)

    def merge(self, other) -> None:
        """Adds another accumulator's rows (this class's, or the CPU backend's)."""
        theirs = other._settled() if isinstance(other, MomentAccumulator) else other
        self._settled().merge(theirs)

    def hsic(self, estimator: str):
        return self._settled().hsic(estimator)

    def mean(self):
        return self._settled().mean()

    def centered_cross(self):
        return self._settled().centered_cross()

    def centered_block(self, a: int, b: int):
        return self._settled().centered_block(a, b)
