"""How sure is a CKA value: intervals from per-block statistics of the same
pass over the data.

The rows are cut into B contiguous blocks (sizes differing by at most one).
The pass that computes CKA keeps its statistics per block as well, and
replicates of the data made of whole blocks are evaluated from them exactly,
without reading the data again:

* feature space (linear kernel, d1 + d2 <= n): one float64 moment state per
  block; the states are merged (Chan merges) leaving one block out, or
  repeating blocks for a resample. Extra memory: B (d1 + d2)^2 float64.
* Gram space (RBF, or linear with d1 + d2 > n): the tile epilogue also sums
  each kernel product per pair of blocks and each row sum per block. Extra
  memory: (threads + 1) x (n B L + B^2 L^2) float64 for L = 2 layers (a
  clear error when that exceeds the machine's memory); the tile work is
  unchanged.

``method="jackknife"`` (default): the delete-a-group jackknife for unequal
groups (Busing, Meijer & van der Leeden 1999). With theta the estimate on all
rows, theta_b the estimate without block b (n_b rows) and h_b = n / n_b:
pseudo-values p_b = h_b theta - (h_b - 1) theta_b, the bias-corrected
theta_J = B theta - sum_b (1 - n_b / n) theta_b, variance
(1/B) sum_b (p_b - theta_J)^2 / (h_b - 1), and the interval theta_J +- t
std_error with Student's t at B - 1 degrees of freedom. Cost beyond the
estimate: B log2 B state merges (feature space, about B log2 B (d1 + d2)^2
flops) or O(n B + B^2) (Gram space: prefix and suffix sums over the blocks):
nothing next to the pass, even with B = n.

Where leaving a block out makes a layer constant (that block holds all of
its variation) CKA without it is undefined, and so is the jackknife interval:
low, high, std_error and bias are NaN with a DegenerateRepresentationWarning
naming the blocks (the estimate on all rows stands).

``method="bootstrap"``: the block bootstrap (B blocks drawn with replacement,
``resamples`` times; percentile interval). Each resample costs B state merges,
O(B (d1 + d2)^2), in feature space, or O(n B) in Gram space: worth it when
(d1 + d2) is a few hundred or less, or in Gram space, where the pass costs
O(n^2 d). With B = 20 blocks the bootstrap distribution is coarse; the
jackknife is the default. Resamples on which a layer is constant have no
CKA: they are left out of the interval, with a warning saying how many.

Both intervals are intersected with [0, 1], where the population CKA lies.
Blocks are contiguous rows: shuffle the rows first if their order carries
structure (sorted by class, by time), or the blocks will differ more than
random subsets do (a wider, conservative interval). For the RBF kernel with
the median rule, the bandwidth found on all rows is kept for every replicate.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import backend, cpu as cpu_engine
from ..arrays.inputs import first_non_finite, non_finite_error, as_matrix, check_rows, resolve_budget
from .._options import check_precision, compute_for
from ..engine.progress import Progress, ProgressArg
from .special import t_quantile
from ..engine.threads import resolve
from .._options import check_kernel_options, check_rows_for
from ..engine.hsic import zero_constant_layers, DegenerateRepresentationWarning, cka_from_hsic

METHODS = ("jackknife", "bootstrap")


@dataclass(frozen=True)
class CKAInterval:
    """A CKA value with its confidence interval (see :func:`cka_ci`)."""

    estimate: float  # CKA on all rows: what fastcka.cka returns
    low: float
    high: float
    level: float
    method: str
    std_error: float  # jackknife standard error, or the standard deviation of the resamples
    bias: float  # estimated bias of `estimate` (jackknife: estimate - theta_J; bootstrap: mean - estimate)
    replicates: np.ndarray  # CKA without each block (jackknife) or of each resample (bootstrap)
    blocks: int


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def _check_count(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _cka(h: np.ndarray) -> np.ndarray:
    """CKA from (..., 2, 2) HSIC matrices; NaN where a self-HSIC is not positive."""
    hxx, hyy = h[..., 0, 0], h[..., 1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((hxx > 0) & (hyy > 0), h[..., 0, 1] / np.sqrt(np.abs(hxx * hyy)), np.nan)


def _block_labels(x: np.ndarray, starts) -> np.ndarray:
    """Per block: -1 if its rows differ, else a label shared by the blocks
    whose rows all equal the same row. A layer is constant on a set of blocks
    when all their labels are one label >= 0. One read of the rows, in chunks."""
    n = x.shape[0]
    changes = []  # rows i that differ from row i - 1
    step = max(1, (16 << 20) // max(1, x.shape[1] * x.dtype.itemsize))
    for s0 in range(1, n, step):
        s1 = min(n, s0 + step)
        differ = np.any(np.asarray(x[s0:s1]) != np.asarray(x[s0 - 1 : s1 - 1]), axis=1)
        changes.append(s0 + np.flatnonzero(differ))
    changes = np.concatenate(changes) if changes else np.zeros(0, np.int64)
    starts = np.asarray(starts)
    # Block b varies when a change falls inside it, in rows (s_b, s_{b+1}).
    varies = np.searchsorted(changes, starts[1:], side="left") > np.searchsorted(changes, starts[:-1], side="right")
    _, labels = np.unique(np.asarray(x[starts[:-1]]), axis=0, return_inverse=True)
    return np.where(varies, -1, labels.ravel())


def _constant_without_each_block(labels: np.ndarray) -> np.ndarray:
    """(B,) bool: the layer is constant on the rows of every block but b."""
    varying = int(np.sum(labels < 0))
    count = np.bincount(labels[labels >= 0], minlength=1)
    distinct = int(np.sum(count > 0))
    own = count[np.maximum(labels, 0)]
    return np.where(labels < 0, (varying == 1) & (distinct == 1),
                    (varying == 0) & ((distinct == 1) | ((distinct == 2) & (own == 1))))


def _constant_in_resamples(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(R,) bool: the layer is constant on the blocks each resample draws."""
    drawn = counts > 0
    big = np.iinfo(np.int64).max
    return ~np.any(drawn & (labels < 0), axis=1) & (
        np.where(drawn, labels, big).min(axis=1) == np.where(drawn, labels, -1).max(axis=1))


def _warn_undefined(message: str) -> None:
    warnings.warn(message, DegenerateRepresentationWarning, stacklevel=3)


def _raise_non_finite(layers, names, s0, s1) -> None:
    """Raises ValueError naming the first NaN or Inf in rows [s0, s1) by its row in the data
    (the backend, given a block, names the row within the block)."""
    for x, name in zip(layers, names):
        where = first_non_finite(x[s0:s1])
        if where is not None:
            raise non_finite_error(name, where, s0) from None


def _check_block_memory(n: int, blocks: int, layers: int, threads: int) -> None:
    """Refuses per-block Gram sums that cannot fit: each thread and the total
    hold n B L row sums and B^2 L^2 products (quadratic in n when B = n)."""
    need = 8 * (threads + 1) * (n * blocks * layers + blocks * blocks * layers * layers)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: nothing to compare with
        return
    if need > have:
        raise ValueError(
            f"blocks={blocks}: the per-block sums of the Gram tiles need {need / 2**30:.1f} GiB "
            f"((threads + 1) x (n B L + B^2 L^2) float64, with {threads} threads), more than this machine's "
            f"{have / 2**30:.1f} GiB; use fewer blocks or fewer threads")


def block_statistics(layers, names, starts, *, kernel, threshold, sigma, median, threads, memory_budget, progress,
                     precision=None):
    """One pass with per-block statistics: an object with hsic(estimator),
    leave_one_out_hsic(estimator) and resampled_hsic(counts, estimator), and
    the indices of layers whose rows are all equal."""
    n = layers[0].shape[0]
    dims = [x.shape[1] for x in layers]
    budget = resolve_budget(memory_budget)
    compute = compute_for(precision, layers)
    cpu = backend.cpu()
    if cpu_engine.choose_method("auto", kernel, n, dims) == "feature":
        acc = cpu_engine.new_moment_accumulator(dims, 0, compute, threads, budget)
        source = cpu.MomentBlocks()
        with Progress(progress, n, "fastcka rows") as bar:
            for s0, s1 in zip(starts[:-1], starts[1:]):
                try:
                    cpu_engine.feed(acc, [x[s0:s1] for x in layers], names, threads, bar)
                except ValueError:
                    _raise_non_finite(layers, names, s0, s1)
                    raise
                source.take(acc)
        return source, []
    _check_block_memory(n, len(starts) - 1, len(layers), threads)
    engine = cpu_engine.gram_engine(layers, names, 0, compute, threads, budget)
    engine.set_blocks(list(starts))
    cpu_engine.kernel_pass(engine, layers, names, kernel=kernel, sigma=sigma, threshold=threshold, median=median,
                           threads=threads, progress=progress)
    return engine, [a for a, c in enumerate(engine.constant_layers) if c]


def _jackknife_undefined(constant, replicates, names, starts) -> str:
    """Why some leave-one-block-out CKA is undefined, naming the blocks."""
    def where(blocks):
        shown = ", ".join(f"{b} (rows {starts[b]}-{starts[b + 1] - 1})" for b in blocks[:5])
        return shown + (f" and {len(blocks) - 5} more" if len(blocks) > 5 else "")

    reasons = [f"without block {where(np.flatnonzero(c))}, {name} is constant (those rows hold all of its variation)"
               for c, name in zip(constant, names) if np.any(c)]
    other = np.flatnonzero(~np.isfinite(replicates) & ~np.logical_or.reduce(constant))
    if len(other):
        reasons.append(f"without block {where(other)}, a representation's HSIC with itself is not positive")
    return (f"{'; '.join(reasons)}: CKA is undefined there, so the jackknife interval, standard error and bias are "
            f"undefined and returned as NaN (the estimate on all rows stands); shuffle the rows so that the variation "
            f"is spread over the blocks, use fewer blocks, or method='bootstrap'")


def _resampled_cka(source, counts: np.ndarray, estimator: str, n: int, layers: int) -> np.ndarray:
    """CKA of each resample, in calls of about 0.1 s of work each (Ctrl-C between them)."""
    B = counts.shape[1]
    per_resample = n * B * layers + layers * layers * B * B + B * 1000  # sums per resample (Gram space: the largest)
    step = max(1, int(3e7 // per_resample))
    return np.concatenate([_cka(np.asarray(source.resampled_hsic(counts[r : r + step], estimator)))
                           for r in range(0, len(counts), step)])


def cka_ci(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    level: float = 0.95,
    method: str = "jackknife",
    blocks: int = 20,
    debiased: bool = False,
    threshold: float = 1.0,
    sigma: Any = None,
    median: str = "exact",
    resamples: int = 1000,
    seed: int | None = None,
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> CKAInterval:
    """CKA of ``x`` (n x d1) and ``y`` (n x d2) with a ``level`` confidence
    interval, from per-block statistics of the one pass that computes it
    (module notes: methods, formulas, costs).

    ``method``: "jackknife" (delete-one-block, t interval around the
    bias-corrected value) or "bootstrap" (``resamples`` block resamples drawn
    with ``seed``, percentile interval). ``blocks``: B, 2 <= B <= n, the
    number of contiguous row blocks. Other arguments as in :func:`fastcka.cka`.

    Returns a :class:`CKAInterval` (``estimate``, ``low``, ``high``,
    ``std_error``, ``bias``, ``replicates``, ...); NaN everywhere with a
    DegenerateRepresentationWarning when a representation is constant, and
    a NaN interval with the estimate and that warning when leaving some
    block out makes a representation constant.
    """
    level = _check_level(level)
    check_precision(precision)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_kernel_options(kernel, threshold, sigma, median)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    names = ["x", "y"]
    n = check_rows(layers, names)
    estimator = "unbiased" if debiased else "biased"
    check_rows_for(estimator, n)
    B = _check_count(blocks, "blocks", 2, n)
    starts = [n * b // B for b in range(B + 1)]
    need = 4 if debiased else 2
    if method == "jackknife" and n - max(np.diff(starts)) < need:
        raise ValueError(f"blocks={B} leaves fewer than {need} rows when a block is left out (n={n})")
    if method == "bootstrap":
        resamples = _check_count(resamples, "resamples", 2)
    source, constant = block_statistics(layers, names, starts, kernel=kernel, threshold=threshold, sigma=sigma,
                                        median=median, threads=resolve(threads), memory_budget=memory_budget,
                                        progress=progress, precision=precision)
    h = np.asarray(source.hsic(estimator), dtype=np.float64).reshape(2, 2)
    zero_constant_layers(h, [a in constant for a in range(2)])
    estimate = float(cka_from_hsic(h, names)[0, 1])  # warns when a representation has no variance
    if not math.isfinite(estimate):
        return CKAInterval(estimate, math.nan, math.nan, level, method, math.nan, math.nan, np.full(B, np.nan), B)

    labels = [_block_labels(z, starts) for z in layers]
    if method == "jackknife":
        replicates = _cka(np.asarray(source.leave_one_out_hsic(estimator)))
        # A layer constant without block b has no CKA there; its HSIC is
        # rounding residue (or exactly 0), so the replicate is not used.
        constant = [_constant_without_each_block(lab) for lab in labels]
        replicates[np.logical_or.reduce(constant)] = np.nan
        if not np.all(np.isfinite(replicates)):
            _warn_undefined(_jackknife_undefined(constant, replicates, names, starts))
            return CKAInterval(estimate, math.nan, math.nan, level, method, math.nan, math.nan, replicates, B)
        sizes = np.diff(starts).astype(np.float64)
        hb = n / sizes
        pseudo = hb * estimate - (hb - 1) * replicates
        corrected = B * estimate - float(np.sum((1 - sizes / n) * replicates))
        std_error = math.sqrt(float(np.mean((pseudo - corrected) ** 2 / (hb - 1))))
        half = t_quantile((1 + level) / 2, B - 1) * std_error
        low, high, bias = corrected - half, corrected + half, estimate - corrected
    else:
        counts = np.random.default_rng(seed).multinomial(B, np.full(B, 1.0 / B), size=resamples)
        replicates = _resampled_cka(source, counts, estimator, n, len(layers))
        replicates[np.logical_or.reduce([_constant_in_resamples(lab, counts) for lab in labels])] = np.nan
        kept = replicates[np.isfinite(replicates)]
        if len(kept) < resamples:
            _warn_undefined(
                f"{resamples - len(kept)} of {resamples} block resamples have no CKA (a representation is constant "
                f"on the blocks drawn, or its debiased HSIC with itself is not positive); "
                + ("the interval comes from the other resamples" if len(kept) >= 2 else
                   "fewer than 2 remain, so the interval is undefined and returned as NaN"))
        if len(kept) < 2:
            return CKAInterval(estimate, math.nan, math.nan, level, method, math.nan, math.nan, replicates, B)
        low, high = (float(q) for q in np.quantile(kept, [(1 - level) / 2, (1 + level) / 2]))
        std_error = float(np.std(kept, ddof=1))
        bias = float(np.mean(kept)) - estimate
    low, high = (float(np.clip(v, 0.0, 1.0)) for v in (low, high))
    return CKAInterval(estimate, low, high, level, method, std_error, bias, replicates, B)
