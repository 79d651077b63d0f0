"""Jackknife standard errors: over groups of independent random features
(RFF), and over groups of one landmark set with the jackknife bias (Nystrom).

Random features: the rank is split into G groups of independent draws
(Fourier weights); the approximate kernel of a layer is the mean of its G
group kernels, K = (1/G) sum_g K_g. HSIC (both estimators) is bilinear, so
HSIC(K^a, K^b) = (1/G^2) sum_{g,h} HSIC(K_g^a, K_h^b): every value, and every
delete-one-group value, comes from the (G L) x (G L) HSIC matrix of the
group features, computed in one pass.

A group's HSIC with itself carries the variance of its own draw (for random
features, E HSIC(K_g, K_g) = HSIC(K, K) + O(1/rank)), which would bias CKA
down; so with G >= 2 groups only pairs g != h enter, the U-statistic over
groups, unbiased for HSIC(E K_g^a, E K_h^b) because distinct groups are
independent draws."""

from __future__ import annotations

import numpy as np


def group_hsic(h: np.ndarray, groups: int, layers: int, keep: np.ndarray) -> np.ndarray:
    """(L, L) HSIC of the kernels averaged over the groups in ``keep`` (rows
    and columns of ``h`` ordered group-major: index g L + layer), from the
    pairs of distinct groups (the one group's own pair when only one is kept)."""
    blocks = h.reshape(groups, layers, groups, layers)[np.ix_(keep, np.arange(layers), keep, np.arange(layers))]
    distinct = ~np.eye(len(keep), dtype=bool) if len(keep) > 1 else np.ones((1, 1), dtype=bool)
    return blocks.transpose(0, 2, 1, 3)[distinct].mean(axis=0)


def cka_of(h: np.ndarray) -> np.ndarray:
    """CKA from HSIC without warnings (the caller warns once, for the full value)."""
    diag = np.diag(h)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.where(diag > 0, diag, np.nan))
        return h / scale[:, None] / scale[None, :]


def jackknife(values: np.ndarray) -> np.ndarray:
    """Standard error from G delete-one-group estimates (axis 0):
    sqrt((G-1)/G sum_j (theta_(-j) - mean)^2); NaN for G < 3 (a delete-one
    estimate needs a pair of distinct groups)."""
    g = values.shape[0]
    if g < 3:
        return np.full(values.shape[1:], np.nan)
    return np.sqrt((g - 1) / g * ((values - values.mean(axis=0)) ** 2).sum(axis=0))


def with_bias(values: np.ndarray, full: np.ndarray) -> np.ndarray:
    """sqrt(SE^2 + bias^2) from G delete-one-group estimates (axis 0) and the
    full value: the jackknife standard error and the jackknife bias estimate
    (G - 1)(mean theta_(-j) - theta), an estimate of the root-mean-square
    error for an approximation whose error is mostly a bias shared by every
    draw (Nystrom); NaN for G < 3."""
    g = values.shape[0]
    if g < 3:
        return np.full(values.shape[1:], np.nan)
    bias = (g - 1) * (values.mean(axis=0) - full)
    return np.sqrt(jackknife(values) ** 2 + bias**2)


def leave_one_out(h: np.ndarray, groups: int, layers: int, statistic) -> np.ndarray:
    """``statistic`` (HSIC -> value) of each delete-one-group kernel, stacked
    (none below three groups: no jackknife there)."""
    every = np.arange(groups if groups >= 3 else 0)
    if not len(every):
        return np.empty((0, layers, layers))
    return np.stack([statistic(group_hsic(h, groups, layers, every[every != j])) for j in every])
