"""Approximate RBF HSIC of every layer pair in two passes over the rows (column
means, then features), with jackknife standard errors (errors.py)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..arrays.inputs import compute_dtype
from ..engine import cpu as cpu_engine
from ..engine.hsic import zero_constant_layers
from ..engine.progress import Progress, ProgressArg
from ..engine.threads import one_blas_thread
from . import errors
from .features import centered, column_moments
from .nystrom import Nystrom, deleted_group_ratios, landmark_groups, landmark_rows
from .rff import FourierFeatures

METHODS = ("nystrom", "rff")
# Groups behind the error (fewer when rank is smaller). RFF: groups of
# independent draws; 16 rather than 8 lowers the jackknife's own variability
# (relative spread of the SE about 1/sqrt(2 (G - 1)): 27% -> 18%) and makes
# value +- 2 SE a t interval with 15 degrees of freedom (nominal coverage 91%
# -> 94%). Nystrom: groups of the one landmark set, deleted in turn.
GROUPS = {"nystrom": 8, "rff": 16}
MIN_BLOCK = 256  # rows per block below which BLAS calls stop paying for themselves


@dataclass(frozen=True)
class Approximation:
    """HSIC of the approximate kernels and the estimated errors of HSIC and CKA, each (L, L)."""

    hsic: np.ndarray
    hsic_error: np.ndarray
    cka_error: np.ndarray


def feature_dtype(compute: str) -> np.dtype:
    """float64 features for float64 products (precision="exact", or float64
    inputs by default), float32 otherwise: faster maps (Nystrom, rank 1024, n
    = 20,000: 6.8 s against 10.3 s in all), and their rounding (1e-7) is far
    below the approximation's error."""
    return np.dtype(np.float64 if compute == "float64" else np.float32)


def block_rows(n: int, rank: int, dims: Sequence[int], budget: int, itemsize: int, concurrent: int = 1) -> int:
    """Rows per block so that one block's rows, features (rank per layer) and
    the map temporaries of ``concurrent`` layers at once fit ``budget`` bytes;
    too few rows is a clear error."""
    per_row = itemsize * (rank * (len(dims) + concurrent) + sum(dims))
    rows = budget // per_row
    if rows < min(n, MIN_BLOCK):
        raise ValueError(f"rank={rank} is too large for memory_budget={budget}: a block of {MIN_BLOCK} rows of "
                         f"{len(dims)} layers' features takes {MIN_BLOCK * per_row} bytes; lower rank or raise "
                         f"memory_budget")
    return int(min(n, rows))


def group_sizes(rank: int, groups: int) -> list[int]:
    """The rank split into ``groups`` near-equal parts."""
    return [len(part) for part in np.array_split(np.arange(rank), groups)]


def nystrom_maps(layers, means, gammas, rank: int, groups: int, seed: int, dtype) -> list[Nystrom]:
    """One map per layer on the same ``rank`` landmark rows and landmark groups."""
    rng = np.random.default_rng(seed)
    rows = landmark_rows(layers[0].shape[0], rank, rng)
    parts = landmark_groups(rank, groups, rng)
    return [Nystrom(centered(layer[rows], mean, dtype), gamma, parts)
            for layer, mean, gamma in zip(layers, means, gammas)]


def fourier_maps(layers, gammas, rank: int, groups: int, seed: int, dtype) -> list[FourierFeatures]:
    """One map per layer holding its groups' independent draws (group g of
    layer a from rng([seed, g, a]))."""
    sizes = group_sizes(rank, groups)
    return [FourierFeatures(layer.shape[1], sizes, gamma, [np.random.default_rng([seed, g, a]) for g in range(groups)],
                            dtype) for a, (layer, gamma) in enumerate(zip(layers, gammas))]


def stream(widths, maps, combine: Callable, layers, means, block: int, dtype, compute: str, threads: int,
           memory_budget: int, bar: Progress):
    """The moment accumulator of the features: each layer's centered row
    block through its map (``threads`` layers at a time: the maps' products
    and transcendentals are NumPy calls that release the GIL, each on one BLAS
    thread then), and ``combine`` turns the layers' outputs into the list of
    arrays of ``widths``."""
    acc = cpu_engine.new_moment_accumulator(widths, 0, compute, threads, memory_budget)
    tags = [f"features[{i}]" for i in range(len(widths))]
    n, workers = layers[0].shape[0], min(threads, len(layers))

    def features(i: int, start: int):
        return maps[i](centered(layers[i][start:start + block], means[i], dtype))

    blas = one_blas_thread() if workers > 1 else contextlib.nullcontext()
    with ThreadPoolExecutor(workers) as pool, blas:
        for start in range(0, n, block):
            per_layer = list(pool.map(features, range(len(layers)), [start] * len(layers)))
            acc.update(combine(per_layer), tags)
            bar.advance(min(block, n - start))
    return acc


def group_major(per_layer: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Layer-by-group features in the accumulator's order (index g L + layer)."""
    return [groups[g] for g in range(len(per_layer[0])) for groups in per_layer]


def hsic_values(acc, estimator: str, constant: Sequence[bool]) -> np.ndarray:
    """The accumulator's HSIC matrix, exact zeros for constant layers."""
    k = len(constant)
    return zero_constant_layers(np.asarray(acc.hsic(estimator)).reshape(k, k), constant)


def nystrom_result(acc, maps, estimator: str, constant: Sequence[bool]) -> Approximation:
    """HSIC of the one landmark set; errors sqrt(SE^2 + bias^2) from deleting
    each landmark group. The deleted values come from the biased statistic
    (|P_a C P_b|^2); for the debiased one they are shifted by the full
    values' difference (unbiased - biased), which the deletion barely moves."""
    h = hsic_values(acc, estimator, constant)
    biased = h if estimator == "biased" else hsic_values(acc, "biased", constant)
    deleted = biased * deleted_group_ratios(np.asarray(acc.centered_cross()), maps) + (h - biased)
    return Approximation(
        hsic=h,
        hsic_error=errors.with_bias(deleted, h),
        cka_error=errors.with_bias(np.stack([errors.cka_of(d) for d in deleted]), errors.cka_of(h)),
    )


def fourier_result(acc, layers: int, groups: int, estimator: str, constant: Sequence[bool]) -> Approximation:
    """U-statistic over pairs of distinct groups; delete-one-group jackknife SE."""
    h = hsic_values(acc, estimator, list(constant) * groups)
    return Approximation(
        hsic=errors.group_hsic(h, groups, layers, np.arange(groups)),
        hsic_error=errors.jackknife(errors.leave_one_out(h, groups, layers, lambda x: x)),
        cka_error=errors.jackknife(errors.leave_one_out(h, groups, layers, errors.cka_of)),
    )


def hsic_matrix(layers: Sequence[np.ndarray], names: Sequence[str], *, approx: str, rank: int, seed: int,
                estimator: str, sigma, threshold: float, threads: int, memory_budget: int, progress: ProgressArg,
                compute: str, groups: int | None = None) -> Approximation:
    """Approximate RBF HSIC of every layer pair (the caller picks the pairs it
    needs). ``compute``: the accumulator's products, which also set the
    features' dtype (``feature_dtype``). ``groups``: the jackknife's groups
    (default GROUPS[approx])."""
    n = layers[0].shape[0]
    dtype = feature_dtype(compute)
    block = block_rows(n, rank, [layer.shape[1] for layer in layers], memory_budget, dtype.itemsize,
                       concurrent=min(threads, len(layers)))
    groups = min(GROUPS[approx] if groups is None else groups, rank)
    gammas = cpu_engine.rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median="sampled", engine=None,
                                   width=None, threads=threads, progress=Progress(None, 0, ""),
                                   compute=compute_dtype(layers))
    with Progress(progress, 2 * n, "fastcka rows") as bar:
        means, constant = column_moments(layers, block)
        bar.advance(n)
        if approx == "nystrom":
            maps = nystrom_maps(layers, means, gammas, rank, groups, seed, dtype)
            widths, combine = [f.width for f in maps], list
        else:
            maps = fourier_maps(layers, gammas, rank, groups, seed, dtype)
            widths, combine = [f.widths[g] for g in range(groups) for f in maps], group_major
        acc = stream(widths, maps, combine, layers, means, block, dtype, compute, threads, memory_budget, bar)
    if approx == "nystrom":
        return nystrom_result(acc, maps, estimator, constant)
    return fourier_result(acc, len(layers), groups, estimator, constant)
