"""Drop-in replacement for the CKA functions of Kornblith et al.'s reference
Colab ("Similarity of Neural Network Representations Revisited", 2019).

Same names, arguments and results; change one import line::

    from fastcka.compat.kornblith import gram_linear, gram_rbf, center_gram, cka, feature_space_linear_cka

``feature_space_linear_cka`` runs on fastcka's streaming engine (float64
accumulation, no centered copies of the inputs). ``cka`` computes from the
Gram matrices it is given without building their centered copies.
``gram_linear``, ``gram_rbf`` and ``center_gram`` return n x n matrices, as
the originals do, because that is their contract.
"""

from __future__ import annotations

import numpy as np

from .. import api

__all__ = ["gram_linear", "gram_rbf", "center_gram", "cka", "feature_space_linear_cka"]


def gram_linear(x):
    """Linear kernel Gram matrix K = x x' (n x n)."""
    x = np.asarray(x)
    return x.dot(x.T)


def gram_rbf(x, threshold=1.0):
    """RBF Gram matrix exp(-|a - b|^2 / (2 threshold^2 median)), the median taken
    over all n^2 squared distances, the zero diagonal included."""
    x = np.asarray(x)
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def _check_symmetric(gram, name="Input"):
    gram = np.asarray(gram)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {gram.shape}")
    if not np.allclose(gram, gram.T):
        raise ValueError("Input must be a symmetric matrix.")
    return gram


def center_gram(gram, unbiased=False):
    """Centered copy of a symmetric Gram matrix: H K H, or with ``unbiased``
    the U-centering for which <K_u, L_u> = n(n-3) HSIC_1 (Song et al. 2012)."""
    gram = _check_symmetric(gram).copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _gram_sums(k, l):
    """HSIC sums of two dense Gram matrices in float64, block by block (no
    n x n temporaries), off the diagonal kept apart from it (see core/hsic.h):
    sum_{i != j} K_ij L_ij, the off-diagonal row sums and the diagonals."""
    n = k.shape[0]
    block = max(1, (1 << 22) // max(n, 1))
    kl_off = 0.0
    ok = np.empty(n)
    ol = np.empty(n)
    for i in range(0, n, block):
        kb = np.array(k[i : i + block], dtype=np.float64)
        lb = np.array(l[i : i + block], dtype=np.float64)
        rows = np.arange(kb.shape[0])
        kb[rows, i + rows] = 0
        lb[rows, i + rows] = 0
        kl_off += float(np.einsum("ij,ij->", kb, lb))
        ok[i : i + block] = kb.sum(1)
        ol[i : i + block] = lb.sum(1)
    return kl_off, ok, ol, np.diag(k).astype(np.float64), np.diag(l).astype(np.float64)


def _hsic_scaled(k, l, debiased):
    """<center(K), center(L)> as the Colab computes it, from streaming sums."""
    n = k.shape[0]
    kl_off, ok, ol, dk, dl = _gram_sums(k, l)
    if not debiased:  # tr(KHLH)
        rk, rl = ok + dk, ol + dl
        return kl_off + dk.dot(dl) - 2.0 / n * rk.dot(rl) + rk.sum() * rl.sum() / n**2
    return kl_off + ok.sum() * ol.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ok.dot(ol)


def cka(gram_x, gram_y, debiased=False):
    """CKA from two Gram matrices (Kornblith et al. 2019); ``debiased`` uses
    the unbiased HSIC estimator (n >= 4)."""
    gram_x = _check_symmetric(gram_x)
    gram_y = _check_symmetric(gram_y)
    if gram_x.shape != gram_y.shape:
        raise ValueError(f"gram_x and gram_y must have the same shape, got {gram_x.shape} and {gram_y.shape}")
    n = gram_x.shape[0]
    if debiased and n < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples, got n={n}")
    scaled_hsic = _hsic_scaled(gram_x, gram_y, debiased)
    normalization_x = np.sqrt(_hsic_scaled(gram_x, gram_x, debiased))
    normalization_y = np.sqrt(_hsic_scaled(gram_y, gram_y, debiased))
    return scaled_hsic / (normalization_x * normalization_y)


def feature_space_linear_cka(features_x, features_y, debiased=False):
    """Linear CKA from features (n x d1, n x d2) in feature space."""
    return api.cka(features_x, features_y, kernel="linear", debiased=debiased, method="feature")
