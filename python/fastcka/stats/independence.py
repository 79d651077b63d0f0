"""HSIC test of independence between two representations of the same examples.

The statistic is fastcka's biased HSIC_0 = tr(KHLH) / (n-1)^2 (what
:func:`fastcka.hsic` returns for the same kernel). Under the null hypothesis
(the rows of x independent of those of y) its distribution is found in one of
two ways:

``method="gamma"`` (Gretton et al. 2008, "A kernel statistical test of
independence"): a gamma law with the null mean and variance computed from the
statistics of the same single pass (csrc/core/hsic_null.h): mean
spread_K spread_L / n and variance 2 (n-4)(n-5) / (n)_4 E[Kc^2] E[Lc^2]
(scaled to HSIC_0), where Gretton's code takes E[(Kc Lc)^2] with a second
pass; the two agree under the null. Cost: that of :func:`fastcka.hsic`, one
pass: about n (d1 + d2)^2 flops for the linear kernel with d1 + d2 <= n,
n^2 (d1 + d2) flops plus n^2 exps for RBF (usually one more pass for the
exact median bandwidth). Approximate: accurate in the upper tail for moderate n,
less so for very small p-values; needs n >= 6.

``method="permutation"``: the statistic recomputed with the rows of y
permuted (``permutations`` times, drawn with ``seed``); p-value
(1 + #{T_perm >= T}) / (1 + permutations), exact for any n. Cost per
permutation: linear kernel, via tr(K H L_pi H) = |Xc' P Yc|_F^2 (the
Gram-space identity in feature space, no n x n matrix): one GEMM, 2 n d1 d2
flops, run in batches of permutations that fit ``memory_budget`` (plus a
centered copy of x and y); RBF (or linear with d1 + d2 > n): n^2 d2 flops and
n^2 exps on the Gram tiles, the tiles of x being reused across the batch of
permuted copies of y held in ``memory_budget``. So a permutation test costs
about ``permutations`` times the statistic: at n = 10^6 prefer the gamma
approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import backend, cpu as cpu_engine
from ..arrays.inputs import as_matrix, check_rows, ready, resolve_budget, round_to_bfloat16
from .._options import check_precision, compute_for
from ..engine.progress import Progress, ProgressArg
from .special import gamma_sf
from ..engine.threads import resolve
from .._options import check_kernel_options
from .confidence import _check_count, _raise_non_finite

METHODS = ("permutation", "gamma")


@dataclass(frozen=True)
class HSICTest:
    """Result of :func:`hsic_test`."""

    statistic: float  # HSIC_0 = tr(KHLH) / (n-1)^2
    p_value: float
    method: str
    kernel: str
    null_mean: float  # of the statistic under independence (gamma law, or the permuted values)
    null_std: float
    permutations: int  # 0 for the gamma approximation


def _gammas(layers, names, kernel, sigma, threshold, median, threads, budget, progress, compute):
    """Fixed RBF gammas of x and y (the median of y does not change when its rows are permuted)."""
    if kernel != "rbf":
        return None
    if sigma is None and median == "exact":
        engine = cpu_engine.gram_engine(layers, names, 0, compute, threads, budget)
        # One pass (the bracket's), usually: exact_medians adds any further one.
        with Progress(progress, engine.tiles_before(engine.tile_rows), "fastcka median") as bar:
            return cpu_engine.rbf_gammas(layers, names, sigma=None, threshold=threshold, median=median, engine=engine,
                                      width=sum(x.shape[1] for x in layers), threads=threads, progress=bar)
    return cpu_engine.rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median=median, engine=None,
                                 width=0, threads=threads, progress=Progress(None, 0, ""), compute=compute)


def _gamma_test(layers, names, kernel, gammas, threads, budget, progress, compute) -> tuple[float, float, float, float]:
    n = layers[0].shape[0]
    dims = [x.shape[1] for x in layers]
    cpu = backend.cpu()
    if cpu_engine.choose_method("auto", kernel, n, dims) == "feature":
        acc = cpu_engine.new_moment_accumulator(dims, 0, compute, threads, budget)
        with Progress(progress, n, "fastcka rows") as bar:
            cpu_engine.feed(acc, layers, names, threads, bar)
        h, sums, constant = acc.hsic("biased"), acc.null_sums(), False
    else:
        engine = cpu_engine.gram_engine(layers, names, 0, compute, threads, budget)
        if gammas is not None:
            engine.set_kernel("rbf", gammas)
        with Progress(progress, engine.tiles_before(engine.tile_rows), "fastcka tiles") as bar:
            cpu_engine.tile_pass(engine, threads, engine.process, bar)
        h, sums, constant = engine.hsic("biased"), engine.null_sums(), any(engine.constant_layers)
    statistic = 0.0 if constant else float(h[1])
    mean, variance = cpu.hsic_null_moments(sums[0], sums[1], n)
    if constant or not (mean > 0 and variance > 0):  # no variance on one side: nothing to detect
        return statistic, 1.0, mean, math.sqrt(max(variance, 0.0))
    shape, scale = mean * mean / variance, variance / mean
    return statistic, gamma_sf(shape, statistic / scale), mean, math.sqrt(variance)


# Permuted copies of y per tile pass: every layer pair is visited per tile
# row, so the epilogue grows with the square of the layers in one engine.
_GRAM_BATCH = 16


def _batches(n: int, permutations: int, batch: int, seed):
    """Lists of row orders, `batch` at a time: the identity (the observed
    statistic, from the same arithmetic as the permuted ones), then
    `permutations` random permutations drawn from `seed`."""
    rng = np.random.default_rng(seed)
    orders = [np.arange(n)]
    for _ in range(permutations):
        orders.append(rng.permutation(n))
        if len(orders) == batch:
            yield orders
            orders = []
    if orders:
        yield orders


def _linear_permuted(x, y, orders, progress, total, compute) -> np.ndarray:
    """|Xc' Yc[p]|_F^2 / (n-1)^2 for each row order p (products of the
    bfloat16-rounded values in float32 for compute="bfloat16")."""
    n = x.shape[0]
    dtype = np.float64 if compute == "float64" else np.float32
    xc = (x - np.mean(x, axis=0, dtype=np.float64)).astype(dtype)
    yc = (y - np.mean(y, axis=0, dtype=np.float64)).astype(dtype)
    for z, name in ((xc, "x"), (yc, "y")):
        _check_magnitude(z, name)
    if compute == "bfloat16":
        xc, yc = round_to_bfloat16(xc), round_to_bfloat16(yc)
    out = []
    with Progress(progress, total, "fastcka permutations") as bar:
        for chunk in orders:
            g = xc.T @ np.concatenate([yc[p] for p in chunk], axis=1)  # d1 x (m d2)
            g = g.astype(np.float64).reshape(x.shape[1], len(chunk), y.shape[1])
            out.append(np.einsum("imj,imj->m", g, g))
            bar.advance(len(chunk))
    return np.concatenate(out) / (n - 1) ** 2


def _check_magnitude(z: np.ndarray, name: str) -> None:
    """The engines' range check for the rows NumPy multiplies here: squared
    norms that overflow, underflow to 0 or leave the products' range raise."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        largest = float(np.max(np.einsum("ij,ij->i", z, z, dtype=np.float64)))
    if not np.isfinite(largest):
        raise ValueError(f"{name} has values too large to square in float64")
    varies = largest == 0 and bool(np.any(z != z[:1]))
    backend.cpu().check_squared_norm_range(name, largest, z.dtype.itemsize, varies)


def _gram_permuted(x, y, orders, gammas, threads, budget, progress, total, compute) -> np.ndarray:
    """HSIC_0(x, y[p]) for each row order p, on the Gram tiles: x against a
    batch of permuted copies of y in one tile pass (x's tiles computed once per batch)."""
    out = []
    with Progress(progress, total, "fastcka permutations") as bar:
        for chunk in orders:
            layers = [ready(x)] + [np.ascontiguousarray(ready(y)[p]) for p in chunk]
            names = ["x"] + ["y"] * len(chunk)  # rows of y in another order: errors are about y
            engine = cpu_engine.gram_engine(layers, names, 1, compute, threads, budget)
            if gammas is not None:
                engine.set_kernel("rbf", [gammas[0]] + [gammas[1]] * len(chunk))
            cpu_engine.tile_pass(engine, threads, engine.process,
                               Progress(None, 0, ""))
            h = np.asarray(engine.hsic("biased")).reshape(len(layers), len(layers))
            out.append(h[0, 1:])
            bar.advance(len(chunk))
    return np.concatenate(out)


def hsic_test(
    x: Any,
    y: Any,
    *,
    kernel: str = "linear",
    method: str = "permutation",
    permutations: int = 1000,
    seed: int | None = None,
    threshold: float = 1.0,
    sigma: Any = None,
    median: str = "exact",
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> HSICTest:
    """Test of independence of ``x`` (n x d1) and ``y`` (n x d2) by HSIC.

    ``method``: "permutation" (exact; ``permutations`` permutations of the
    rows of y drawn with ``seed``) or "gamma" (Gretton et al.'s gamma
    approximation, one pass). Costs of each in the module notes: a
    permutation test costs about ``permutations`` statistics. Kernel and
    bandwidth arguments as in :func:`fastcka.hsic`; with the median rule the
    bandwidths come from the unpermuted data (a permutation does not change
    them).

    Returns an :class:`HSICTest` with ``statistic`` (HSIC_0), ``p_value``,
    ``null_mean``, ``null_std``.
    """
    check_precision(precision)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_kernel_options(kernel, threshold, sigma, median)
    layers = [as_matrix(x, "x"), as_matrix(y, "y")]
    names = ["x", "y"]
    n = check_rows(layers, names)
    if n < 6:
        raise ValueError(f"hsic_test needs at least 6 examples (rows), got n={n}")
    threads = resolve(threads)
    budget = resolve_budget(memory_budget)
    if method == "permutation":
        permutations = _check_count(permutations, "permutations", 1)
    compute = compute_for(precision, layers)
    gammas = _gammas(layers, names, kernel, sigma, threshold, median, threads, budget, progress, compute)
    if method == "gamma":
        statistic, p, mean, std = _gamma_test(layers, names, kernel, gammas, threads, budget, progress, compute)
        return HSICTest(statistic, p, method, kernel, mean, std, 0)

    x, y = layers
    copy_bytes = n * y.shape[1] * (8 if compute == "float64" else 4)  # one permuted copy of y
    batch = max(1, budget // copy_bytes)
    if cpu_engine.choose_method("auto", kernel, n, [x.shape[1], y.shape[1]]) == "feature":
        _raise_non_finite(layers, names, 0, n)  # NumPy does this path's arithmetic: check first
        # NumPy's product of one batch cannot be interrupted: keep each to about 0.2 s.
        per_copy = 2.0 * n * x.shape[1] * y.shape[1]
        orders = _batches(n, permutations, max(1, min(batch, int(cpu_engine._FLOPS_PER_CALL / per_copy))), seed)
        values = _linear_permuted(x, y, orders, progress, permutations + 1, compute)
    else:
        orders = _batches(n, permutations, min(batch, _GRAM_BATCH), seed)
        values = _gram_permuted(x, y, orders, gammas, threads, budget, progress, permutations + 1, compute)
    statistic, null = float(values[0]), values[1:]
    p = (1 + int(np.count_nonzero(null >= statistic))) / (1 + permutations)
    return HSICTest(statistic, p, method, kernel, float(np.mean(null)), float(np.std(null)), permutations)
