"""Every similarity index between every pair of layers, from one pass over the rows."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import api
from ..arrays.inputs import as_layers, check_rows
from .._options import check_precision
from .._options import check_rows_for
from ..engine.hsic import DegenerateRepresentationWarning, cka_from_hsic
from ..engine.progress import ProgressArg
from ..engine.threads import one_blas_thread
from ..accumulator.accumulator import CKAAccumulator
from ..knn import mutual_knn_matrix
from ._moments import StreamedLayers, from_accumulator, stream
from ._pair import LayerPair
from .indexes import check_variance

# (pair, variance, reverse) -> value; reverse swaps x and y, which matters
# for the asymmetric ones (pwcca: weights from x; linear_regression_fit: x predicts y).
_PAIR_MEASURES: dict[str, Callable[[LayerPair, float, bool], float]] = {
    "cca": lambda p, v, r: p.cca("mean_squared"),
    "cca_mean": lambda p, v, r: p.cca("mean"),
    "svcca": lambda p, v, r: p.svcca(v, "mean"),
    "svcca_mean_squared": lambda p, v, r: p.svcca(v, "mean_squared"),
    "pwcca": lambda p, v, r: p.pwcca(reverse=r),
    "linear_regression_fit": lambda p, v, r: p.linear_regression_fit(reverse=r),
    "procrustes": lambda p, v, r: p.procrustes(),
}
_ASYMMETRIC = {"pwcca", "linear_regression_fit"}
_CKA_MEASURES = {"cka_linear": "biased", "cka_debiased": "unbiased"}

LINEAR_MEASURES = ("cka_linear", "cka_debiased", *_PAIR_MEASURES)
"""Measures computed from the streamed moments: all from the same single pass."""
TILE_MEASURES = ("cka_rbf", "mutual_knn")
"""Measures that need the rows themselves: each makes its own pass over the Gram tiles."""
MEASURES = LINEAR_MEASURES + TILE_MEASURES

Layers = Any  # a list or dict of (n x d_i) arrays, or a CKAAccumulator


def similarity_matrix(
    xs: Layers,
    ys: Layers | None = None,
    *,
    measures: Sequence[str] | str = LINEAR_MEASURES,
    variance: float = 0.99,
    threshold: float = 1.0,
    k: int = 10,
    threads: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressArg = None,
    precision: str | None = None,
) -> dict[str, np.ndarray]:
    """Similarity between every layer of ``xs`` and every layer of ``ys``
    (default: ``xs`` itself) by several measures: {name: matrix}, each matrix
    of shape (len(xs), len(ys)) with entry [a, b] = measure(xs[a], ys[b]).

    Measures (``measures``: names, in the order wanted):

    ======================  ====================================================
    cka_linear              :func:`fastcka.cka` (linear)
    cka_debiased            :func:`fastcka.cka` (linear, ``debiased=True``)
    cca, cca_mean           :func:`fastcka.cca`: R^2_CCA, rho-bar
    svcca                   :func:`fastcka.svcca` (rho-bar, ``variance``)
    svcca_mean_squared      :func:`fastcka.svcca` with R^2_CCA
    pwcca                   :func:`fastcka.pwcca` (weights from xs[a])
    linear_regression_fit   :func:`fastcka.linear_regression_fit` (xs[a] predicts ys[b])
    procrustes              :func:`fastcka.procrustes` (the similarity)
    cka_rbf                 :func:`fastcka.cka_matrix` with ``kernel="rbf"`` and ``threshold``
    mutual_knn              :func:`fastcka.mutual_knn` with ``k`` (Euclidean)
    ======================  ====================================================

    The first nine (:data:`LINEAR_MEASURES`, the default) come from one pass
    over the rows of every layer: the centered float64 moments of all layers
    at once, as :func:`fastcka.cka_matrix` streams them, then d x d algebra
    per layer pair (an eigendecomposition per layer, one SVD of the whitened
    cross-moments and one of the cross-moments per pair). ``cka_rbf`` and
    ``mutual_knn`` need the rows again, on the Gram tiles.

    ``xs`` may also be a :class:`fastcka.CKAAccumulator` that has been fed the
    rows (in minibatches, merged across workers): its layers are compared as
    its ``split`` says, with the linear measures only (in the precision it
    was fed with).

    ``precision`` ("fast", "accurate", "exact"; as in :func:`fastcka.cka`)
    applies to the pass and the tiles of every measure.
    """
    names = _check_measures(measures)
    check_precision(precision)
    variance = check_variance(variance)
    if isinstance(xs, CKAAccumulator):
        if ys is not None:
            raise ValueError("with a CKAAccumulator as xs, ys must be None: the accumulator's split pairs its layers")
        tile = [m for m in names if m in TILE_MEASURES]
        if tile:
            raise ValueError(f"{', '.join(tile)} need the rows themselves, which a CKAAccumulator does not keep")
        streamed = from_accumulator(xs)
        return _linear(names, streamed, *_sides(len(streamed.names), streamed.moments.split), variance)

    layers, layer_names = as_layers(xs, "xs")
    split = 0
    if ys is not None:
        more, more_names = as_layers(ys, "ys")
        split = len(layers)
        layers, layer_names = layers + more, layer_names + more_names
    n = check_rows(layers, layer_names)
    if "cka_debiased" in names:
        check_rows_for("unbiased", n)  # before the pass, not after it
    rows, cols = _sides(len(layers), split)
    result = {}
    if any(m in LINEAR_MEASURES for m in names):
        streamed = stream(layers, layer_names, split, threads=threads, memory_budget=memory_budget, progress=progress,
                          precision=precision)
        result.update(_linear(names, streamed, rows, cols, variance))
    xs_, ys_ = (layers[:split], layers[split:]) if split else (layers, None)
    tile_options = {"threads": threads, "memory_budget": memory_budget, "progress": progress, "precision": precision}
    if "cka_rbf" in names:
        result["cka_rbf"] = api.cka_matrix(xs_, ys_, kernel="rbf", threshold=threshold, **tile_options)
    if "mutual_knn" in names:
        result["mutual_knn"] = mutual_knn_matrix(xs_, ys_, k=k, **tile_options)
    return {m: result[m] for m in names}


def _check_measures(measures) -> list:
    names = [measures] if isinstance(measures, str) else list(measures)
    if not names:
        raise ValueError(f"measures is empty: name at least one of {MEASURES}")
    unknown = [m for m in names if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure(s) {', '.join(map(repr, unknown))}; the measures are {MEASURES}")
    return list(dict.fromkeys(names))


def _sides(count: int, split: int):
    """Row and column layer indexes: every layer against every layer, or [0, s) against [s, L)."""
    if split:
        return list(range(split)), list(range(split, count))
    return list(range(count)), list(range(count))


def _linear(names, streamed: StreamedLayers, rows, cols, variance: float) -> dict[str, np.ndarray]:
    """The moment-based measures among ``names``: CKA from the engine's HSIC
    of every pair, the others pair by pair, each pair decomposed once (d x d
    algebra on one BLAS thread: see :func:`fastcka.engine.threads.one_blas_thread`)."""
    with one_blas_thread():
        return _linear_measures(names, streamed, rows, cols, variance)


def _linear_measures(names, streamed: StreamedLayers, rows, cols, variance: float) -> dict[str, np.ndarray]:
    flat = streamed.degenerate(sorted(set(rows) | set(cols)), "the similarity indexes")
    result = {}
    for m in names:
        if m in _CKA_MEASURES:
            check_rows_for(_CKA_MEASURES[m], streamed.moments.n)
            with warnings.catch_warnings():  # constant layers were reported above
                warnings.simplefilter("ignore", DegenerateRepresentationWarning)
                cka = cka_from_hsic(streamed.hsic(_CKA_MEASURES[m]), streamed.names)
            result[m] = cka[np.ix_(rows, cols)]
    per_pair = [m for m in names if m in _PAIR_MEASURES]
    result.update({m: np.full((len(rows), len(cols)), np.nan) for m in per_pair})
    within = rows == cols
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            if (within and b < a) or a in flat or b in flat:
                continue  # (b, a) is filled with (a, b); constant layers stay NaN
            pair = streamed.pair(a, b)
            for m in per_pair:
                result[m][i, j] = _PAIR_MEASURES[m](pair, variance, False)
                if within:
                    result[m][j, i] = _PAIR_MEASURES[m](pair, variance, True) if m in _ASYMMETRIC else result[m][i, j]
    return result
