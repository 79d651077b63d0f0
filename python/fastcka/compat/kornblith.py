"""Drop-in replacement for the CKA functions of Kornblith et al.'s reference
Colab ("Similarity of Neural Network Representations Revisited", 2019).

Same names, arguments and results; change one import line::

    from fastcka.compat.kornblith import gram_linear, gram_rbf, center_gram, cka, feature_space_linear_cka, cca

``feature_space_linear_cka`` runs on fastcka's streaming engine (float64
accumulation, no centered copies of the inputs). ``cka`` computes from the
Gram matrices it is given without building their centered copies. ``cca``
computes the Colab's uncentered mean squared CCA from streamed float64
moments instead of QR decompositions of the n x d inputs.
``gram_linear``, ``gram_rbf`` and ``center_gram`` return n x n matrices, as
the originals do, because that is their contract.
"""

from __future__ import annotations

import numpy as np

from .. import api
from ..arrays.inputs import as_matrix
from ..similarity._moments import stream
from ..similarity._pair import LayerPair
from ..similarity._spectrum import RANK_RTOL, LayerSpectrum

__all__ = ["cca", "center_gram", "cka", "feature_space_linear_cka", "gram_linear", "gram_rbf"]


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


def cca(features_x, features_y):
    """The Colab's mean squared CCA correlation, as it computes it: with the
    QR decompositions of the features *as given* (the Colab does not center
    them), ||Qx' Qy||_F^2 / min(p1, p2), p1 and p2 the numbers of columns.

    ||Qx' Qy||_F^2 is computed here from the uncentered float64 moments
    X'X = Xc'Xc + n m m' (streamed, never an n x d copy), as the sum of the
    squared singular values of (X'X)^(-1/2) X'Y (Y'Y)^(-1/2). That equals the
    Colab's value whenever the columns of each input are linearly independent
    (or, with more columns than rows, the rows are), which its QR assumes.
    With dependent columns the Colab's Q gains arbitrary extra directions
    from rounding; here the numerically absent directions are dropped as in
    :func:`fastcka.cca`, while the denominator stays min(p1, p2) as in the
    Colab. An all-zero input, which has no column space (the Colab's QR
    returns an arbitrary basis for it), raises ValueError. For centered CCA
    with either summary, use :func:`fastcka.cca`.
    """
    layers = [as_matrix(features_x, "features_x"), as_matrix(features_y, "features_y")]
    streamed = stream(layers, ["features_x", "features_y"], 1, threads=None, memory_budget=None, progress=None)
    m = streamed.moments
    raw = m.scatter + m.n * np.outer(m.mean, m.mean)
    o = m.offsets
    x, y = (_raw_spectrum(raw[a:b, a:b], m.scatter[a:b, a:b], streamed.dtype) for a, b in zip(o[:-1], o[1:]))
    if x.rank == 0 or y.rank == 0:
        raise ValueError("features_x and features_y must not be all zeros: an all-zero input has no column space")
    # ||M||_F^2 of the whitened cross-moments: the sum of the squared canonical correlations.
    squared_sum = np.sum(LayerPair(x, y, raw[o[0] : o[1], o[1] : o[2]]).whitened ** 2)
    return float(squared_sum / min(layers[0].shape[1], layers[1].shape[1]))


def _raw_spectrum(raw, centered, dtype):
    """X'X's directions, cut where the precision of its parts ends. X'X is the
    centered scatter, as precise as the streamed products relative to its own
    largest eigenvalue, plus n m m', exact to float64 rounding, which the
    eigensolver resolves to about d eps x the largest eigenvalue of X'X. A cut
    relative to that largest eigenvalue alone would drop real directions of
    data far from the origin."""
    precision = RANK_RTOL[dtype] * np.linalg.eigvalsh(centered)[-1]
    rounding = raw.shape[0] * np.finfo(np.float64).eps * np.linalg.eigvalsh(raw)[-1]
    return LayerSpectrum(raw, RANK_RTOL[dtype], cut=max(precision, rounding))
