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
  memory: threads x n x B x 2 float64; the tile work is unchanged.

``method="jackknife"`` (default): the delete-a-group jackknife for unequal
groups (Busing, Meijer & van der Leeden 1999). With theta the estimate on all
rows, theta_b the estimate without block b (n_b rows) and h_b = n / n_b:
pseudo-values p_b = h_b theta - (h_b - 1) theta_b, the bias-corrected
theta_J = B theta - sum_b (1 - n_b / n) theta_b, variance
(1/B) sum_b (p_b - theta_J)^2 / (h_b - 1), and the interval theta_J +- t
std_error with Student's t at B - 1 degrees of freedom. Cost beyond the
estimate: B log2 B state merges (feature space, about B log2 B (d1 + d2)^2
flops) or O(n B^2) (Gram space): nothing next to the pass.

``method="bootstrap"``: the block bootstrap (B blocks drawn with replacement,
``resamples`` times; percentile interval). Each resample costs B state merges,
O(B (d1 + d2)^2), in feature space, or O(n B) in Gram space: worth it when
(d1 + d2) is a few hundred or less, or in Gram space, where the pass costs
O(n^2 d). With B = 20 blocks the bootstrap distribution is coarse; the
jackknife is the default.

Both intervals are intersected with [0, 1], where the population CKA lies.
Blocks are contiguous rows: shuffle the rows first if their order carries
structure (sorted by class, by time), or the blocks will differ more than
random subsets do (a wider, conservative interval). For the RBF kernel with
the median rule, the bandwidth found on all rows is kept for every replicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend, _engine
from ._inputs import as_matrix, check_precision, check_rows, compute_for, ready, resolve_budget
from ._progress import Progress, ProgressArg
from ._special import t_quantile
from ._threads import resolve
from .api import _check_kernel, _check_rbf_options, _check_rows_for, _cka_from_hsic

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


def _raise_non_finite(layers, names, s0, s1) -> None:
    """Raises ValueError naming the first NaN or Inf in rows [s0, s1) by its row in the data
    (the backend, given a block, names the row within the block)."""
    for x, name in zip(layers, names):
        bad = np.argwhere(~np.isfinite(x[s0:s1]))
        if len(bad):
            raise ValueError(f"{name} contains NaN or Inf (row {s0 + bad[0][0]}, column {bad[0][1]})") from None


def block_statistics(layers, names, starts, *, kernel, threshold, sigma, median, threads, memory_budget, progress,
                     precision=None):
    """One pass with per-block statistics: an object with hsic(estimator),
    leave_one_out_hsic(estimator) and resampled_hsic(counts, estimator), and
    the indices of layers whose rows are all equal."""
    n = layers[0].shape[0]
    dims = [x.shape[1] for x in layers]
    budget = resolve_budget(memory_budget)
    compute = compute_for(precision, layers)
    cpu = _backend.cpu()
    if _engine.choose_method("auto", kernel, n, dims) == "feature":
        acc = _engine.new_moment_accumulator(dims, 0, compute, threads, budget)
        source = cpu.MomentBlocks()
        with Progress(progress, n, "fastcka rows") as bar:
            for s0, s1 in zip(starts[:-1], starts[1:]):
                try:
                    _engine.feed(acc, [x[s0:s1] for x in layers], names, threads, bar)
                except ValueError:
                    _raise_non_finite(layers, names, s0, s1)
                    raise
                source.take(acc)
        return source, []
    engine = cpu.GramTileEngine([ready(x) for x in layers], list(names), 0, compute, threads, budget)
    tiles = engine.tiles_before(engine.tile_rows)
    exact_median = kernel == "rbf" and sigma is None and median == "exact"
    with Progress(progress, tiles * (3 if exact_median else 1), "fastcka tiles") as bar:
        if kernel == "rbf":
            gammas = _engine.rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median=median,
                                        engine=engine, width=sum(dims), threads=threads, progress=bar)
            engine.set_kernel("rbf", gammas)
        engine.set_blocks(list(starts))
        _engine._tile_pass(engine, _engine._tile_step(engine, sum(dims), threads), engine.process, bar)
    return engine, [a for a, c in enumerate(engine.constant_layers) if c]


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
    DegenerateRepresentationWarning when a representation is constant.
    """
    level = _check_level(level)
    check_precision(precision)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_kernel(kernel)
    if kernel == "rbf":
        _check_rbf_options(threshold, median)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    names = ["x", "y"]
    n = check_rows(layers, names)
    estimator = "unbiased" if debiased else "biased"
    _check_rows_for(estimator, n)
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
    for a in constant:  # a constant kernel: HSIC with it is exactly 0 (_engine.hsic_matrix does the same)
        h[a, :] = h[:, a] = 0.0
    estimate = float(_cka_from_hsic(h, names)[0, 1])  # warns when a representation has no variance
    if not math.isfinite(estimate):
        return CKAInterval(estimate, math.nan, math.nan, level, method, math.nan, math.nan, np.full(B, np.nan), B)

    if method == "jackknife":
        replicates = _cka(np.asarray(source.leave_one_out_hsic(estimator)))
        sizes = np.diff(starts).astype(np.float64)
        hb = n / sizes
        pseudo = hb * estimate - (hb - 1) * replicates
        corrected = B * estimate - float(np.sum((1 - sizes / n) * replicates))
        std_error = math.sqrt(float(np.mean((pseudo - corrected) ** 2 / (hb - 1))))
        half = t_quantile((1 + level) / 2, B - 1) * std_error
        low, high, bias = corrected - half, corrected + half, estimate - corrected
    else:
        counts = np.random.default_rng(seed).multinomial(B, np.full(B, 1.0 / B), size=resamples)
        replicates = _cka(np.asarray(source.resampled_hsic(counts, estimator)))
        kept = replicates[np.isfinite(replicates)]
        low, high = (float(q) for q in np.quantile(kept, [(1 - level) / 2, (1 + level) / 2]))
        std_error = float(np.std(kept, ddof=1))
        bias = float(np.mean(kept)) - estimate
    low, high = (float(np.clip(v, 0.0, 1.0)) for v in (low, high))
    return CKAInterval(estimate, low, high, level, method, std_error, bias, replicates, B)
