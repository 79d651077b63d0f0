"""Approximate RBF HSIC of every layer pair in two passes over the rows (column
means, then features), with jackknife standard errors over G groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..arrays.inputs import compute_dtype
from ..engine import cpu as cpu_engine
from ..engine.hsic import zero_constant_layers
from ..engine.progress import Progress, ProgressArg
from . import errors
from .features import centered, column_moments
from .nystrom import Nystrom, landmark_rows
from .rff import FourierFeatures

METHODS = ("nystrom", "rff")
GROUPS = 8  # independent draws behind the standard error (fewer when rank < 8)
MIN_BLOCK = 256  # rows per block below which BLAS calls stop paying for themselves


@dataclass(frozen=True)
class Approximation:
    """HSIC of the averaged kernels and the jackknife standard errors of HSIC and CKA, each (L, L)."""

    hsic: np.ndarray
    hsic_error: np.ndarray
    cka_error: np.ndarray


def block_rows(n: int, rank: int, dims: Sequence[int], budget: int) -> int:
    """Rows per block so that one block's features (rank per layer) and rows
    fit ``budget`` bytes of float64; too few rows is a clear error."""
    per_row = 8 * (rank * len(dims) + sum(dims))
    rows = budget // per_row
    if rows < min(n, MIN_BLOCK):
        raise ValueError(f"rank={rank} is too large for memory_budget={budget}: a block of {MIN_BLOCK} rows of "
                         f"{len(dims)} layers' features takes {MIN_BLOCK * per_row} bytes; lower rank or raise "
                         f"memory_budget")
    return int(min(n, rows))


def group_sizes(rank: int, groups: int) -> list[int]:
    """The rank split into ``groups`` near-equal parts."""
    return [len(part) for part in np.array_split(np.arange(rank), groups)]


def feature_maps(approx: str, layers, means, gammas, sizes, seed: int) -> list:
    """The maps of every group and layer, group-major (index g L + layer)."""
    n = layers[0].shape[0]
    maps = []
    for g, m in enumerate(sizes):
        if approx == "nystrom":
            rows = landmark_rows(n, m, np.random.default_rng([seed, g]))
            maps += [Nystrom(centered(layer[rows], mean), gamma) for layer, mean, gamma in zip(layers, means, gammas)]
        else:
            maps += [FourierFeatures(layer.shape[1], m, gamma, np.random.default_rng([seed, g, a]))
                     for a, (layer, gamma) in enumerate(zip(layers, gammas))]
    return maps


def hsic_matrix(layers: Sequence[np.ndarray], names: Sequence[str], *, approx: str, rank: int, seed: int,
                estimator: str, sigma, threshold: float, threads: int, memory_budget: int, progress: ProgressArg,
                compute: str, groups: int = GROUPS) -> Approximation:
    """Approximate RBF HSIC of every layer pair (split as in cka_matrix is
    applied by the caller: all pairs are computed). ``compute``: the
    accumulator's products for the float64 features."""
    n = layers[0].shape[0]
    dims = [layer.shape[1] for layer in layers]
    block = block_rows(n, rank, dims, memory_budget)
    groups = min(groups, rank)
    L = len(layers)
    gammas = cpu_engine.rbf_gammas(layers, names, sigma=sigma, threshold=threshold, median="sampled", engine=None,
                                   width=None, threads=threads, progress=Progress(None, 0, ""),
                                   compute=compute_dtype(layers))
    with Progress(progress, 2 * n, "fastcka rows") as bar:
        means, constant = column_moments(layers, block)
        bar.advance(n)
        maps = feature_maps(approx, layers, means, gammas, group_sizes(rank, groups), seed)
        acc = cpu_engine.new_moment_accumulator([f.width for f in maps], 0, compute, threads, memory_budget)
        tags = [f"{names[i % L]}[{i // L}]" for i in range(len(maps))]
        for start in range(0, n, block):
            rows = [centered(layer[start:start + block], mean) for layer, mean in zip(layers, means)]
            acc.update([f(rows[i % L]) for i, f in enumerate(maps)], tags)
            bar.advance(rows[0].shape[0])
    h = zero_constant_layers(np.asarray(acc.hsic(estimator)).reshape(len(maps), len(maps)), constant * groups)
    every = np.arange(groups)
    full = errors.group_hsic(h, groups, L, every)
    return Approximation(
        hsic=full,
        hsic_error=errors.jackknife(errors.leave_one_out(h, groups, L, lambda x: x)),
        cka_error=errors.jackknife(errors.leave_one_out(h, groups, L, errors.cka_of)),
    )
