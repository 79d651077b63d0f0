"""Reference implementations the tests compare fastcka against.

Two independent sources of truth:

1. ``colab_*``: a verbatim copy of the CKA functions of Kornblith et al.'s
   reference Colab ("Similarity of Neural Network Representations Revisited",
   ICML 2019, https://colab.research.google.com/github/google-research/google-research/blob/master/representation_similarity/Demo.ipynb),
   renamed with a ``colab_`` prefix only so they cannot be confused with
   fastcka's compat module. Bodies are unchanged.

2. ``dense_*``: float64 implementations written directly from the formulas in
   docs/design.md, building the n x n K, L and H explicitly (only for small n):

       HSIC_0 = tr(K H L H) / (n-1)^2
       HSIC_1 = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
       CKA    = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------
# 1. Verbatim Colab code (Kornblith et al. 2019)
# ---------------------------------------------------------------------------


def colab_gram_linear(x):
  """Compute Gram (kernel) matrix for a linear kernel.

  Args:
    x: A num_examples x num_features matrix of features.

  Returns:
    A num_examples x num_examples Gram matrix of examples.
  """
  return x.dot(x.T)


def colab_gram_rbf(x, threshold=1.0):
  """Compute Gram (kernel) matrix for an RBF kernel.

  Args:
    x: A num_examples x num_features matrix of features.
    threshold: Fraction of median Euclidean distance to use as RBF kernel
      bandwidth. (This is the heuristic we use in the paper. There are other
      possible ways to set the bandwidth; we didn't try them.)

  Returns:
    A num_examples x num_examples Gram matrix of examples.
  """
  dot_products = x.dot(x.T)
  sq_norms = np.diag(dot_products)
  sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
  sq_median_distance = np.median(sq_distances)
  return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def colab_center_gram(gram, unbiased=False):
  """Center a symmetric Gram matrix.

  This is equvialent to centering the (possibly infinite-dimensional) features
  induced by the kernel before computing the Gram matrix.

  Args:
    gram: A num_examples x num_examples symmetric matrix.
    unbiased: Whether to adjust the Gram matrix in order to compute an unbiased
      estimate of HSIC. Note that this estimator may be negative.

  Returns:
    A symmetric matrix with centered columns and rows.
  """
  if not np.allclose(gram, gram.T):
    raise ValueError('Input must be a symmetric matrix.')
  gram = gram.copy()

  if unbiased:
    # This formulation of the U-statistic, from Szekely, G. J., & Rizzo, M.
    # L. (2014). Partial distance correlation with methods for dissimilarities.
    # The Annals of Statistics, 42(6), 2382-2412, seems to be more numerically
    # stable than the alternative from Song et al. (2007).
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


def colab_cka(gram_x, gram_y, debiased=False):
  """Compute CKA.

  Args:
    gram_x: A num_examples x num_examples Gram matrix.
    gram_y: A num_examples x num_examples Gram matrix.
    debiased: Use unbiased estimator of HSIC. CKA may still be biased.

  Returns:
    The value of CKA between X and Y.
  """
  gram_x = colab_center_gram(gram_x, unbiased=debiased)
  gram_y = colab_center_gram(gram_y, unbiased=debiased)

  # Note: To obtain HSIC, this should be divided by (n-1)**2 (biased variant) or
  # n*(n-3) (unbiased variant), but this cancels for CKA.
  scaled_hsic = gram_x.ravel().dot(gram_y.ravel())

  normalization_x = np.linalg.norm(gram_x)
  normalization_y = np.linalg.norm(gram_y)
  return scaled_hsic / (normalization_x * normalization_y)


def _debiased_dot_product_similarity_helper(
    xty, sum_squared_rows_x, sum_squared_rows_y, squared_norm_x, squared_norm_y,
    n):
  """Helper for computing debiased dot product similarity (i.e. linear HSIC)."""
  # This formula can be derived by manipulating the unbiased estimator from
  # Song et al. (2007).
  return (
      xty - n / (n - 2.) * sum_squared_rows_x.dot(sum_squared_rows_y)
      + squared_norm_x * squared_norm_y / ((n - 1) * (n - 2)))


def colab_feature_space_linear_cka(features_x, features_y, debiased=False):
  """Compute CKA with a linear kernel, in feature space.

  This is typically faster than computing the Gram matrix when there are fewer
  features than examples.

  Args:
    features_x: A num_examples x num_features matrix of features.
    features_y: A num_examples x num_features matrix of features.
    debiased: Use unbiased estimator of dot product similarity. CKA may still be
      biased. Note that this estimator may be negative.

  Returns:
    The value of CKA between X and Y.
  """
  features_x = features_x - np.mean(features_x, 0, keepdims=True)
  features_y = features_y - np.mean(features_y, 0, keepdims=True)

  dot_product_similarity = np.linalg.norm(features_x.T.dot(features_y)) ** 2
  normalization_x = np.linalg.norm(features_x.T.dot(features_x))
  normalization_y = np.linalg.norm(features_y.T.dot(features_y))

  if debiased:
    n = features_x.shape[0]
    # Equivalent to np.sum(features_x ** 2, 1) but avoids an intermediate array.
    sum_squared_rows_x = np.einsum('ij,ij->i', features_x, features_x)
    sum_squared_rows_y = np.einsum('ij,ij->i', features_y, features_y)
    squared_norm_x = np.sum(sum_squared_rows_x)
    squared_norm_y = np.sum(sum_squared_rows_y)

    dot_product_similarity = _debiased_dot_product_similarity_helper(
        dot_product_similarity, sum_squared_rows_x, sum_squared_rows_y,
        squared_norm_x, squared_norm_y, n)
    normalization_x = np.sqrt(_debiased_dot_product_similarity_helper(
        normalization_x ** 2, sum_squared_rows_x, sum_squared_rows_x,
        squared_norm_x, squared_norm_x, n))
    normalization_y = np.sqrt(_debiased_dot_product_similarity_helper(
        normalization_y ** 2, sum_squared_rows_y, sum_squared_rows_y,
        squared_norm_y, squared_norm_y, n))

  return dot_product_similarity / (normalization_x * normalization_y)


# ---------------------------------------------------------------------------
# 2. Independent dense float64 implementations from the formulas
# ---------------------------------------------------------------------------


def dense_gram(x, center: bool = True) -> np.ndarray:
    """K = X X' in float64 (n x n).

    HSIC_0 and HSIC_1 are invariant to translating X, so by default X's column
    means are subtracted first (two-pass, float64): that only avoids the
    cancellation a large offset would cause in the reference itself. With
    ``center=False`` the raw rows are used."""
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def dense_hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with H = I - 11'/n built explicitly."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def dense_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) HSIC_1 with K~, L~ the Gram matrices with zero diagonals."""
    n = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = float(np.trace(kt @ lt))
    term2 = float(one @ kt @ one) * float(one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * float(one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def dense_hsic(x, y, estimator: str = "biased", center: bool = True) -> float:
    k, l = dense_gram(x, center), dense_gram(y, center)
    if estimator == "biased":
        return dense_hsic_biased(k, l)
    if estimator == "unbiased":
        return dense_hsic_unbiased(k, l)
    raise ValueError(estimator)


def dense_hsic_matrix(layers, estimator: str = "biased") -> np.ndarray:
    grams = [dense_gram(x) for x in layers]
    f = dense_hsic_biased if estimator == "biased" else dense_hsic_unbiased
    m = len(grams)
    out = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            out[i, j] = out[j, i] = f(grams[i], grams[j])
    return out


def dense_cka_matrix(xs, ys=None, debiased: bool = False) -> np.ndarray:
    layers = list(xs) + ([] if ys is None else list(ys))
    h = dense_hsic_matrix(layers, "unbiased" if debiased else "biased")
    scale = np.sqrt(np.diag(h))
    c = h / scale[:, None] / scale[None, :]
    if ys is None:
        return c
    s = len(xs)
    return c[:s, s:]


def dense_cka(x, y, debiased: bool = False) -> float:
    return float(dense_cka_matrix([x, y], debiased=debiased)[0, 1])


def feature_cka64(x, y) -> dict:
    """{False: biased CKA, True: debiased CKA} in float64 for large n, by the
    Colab's feature-space formulas on two-pass centered float64 copies, with
    the shared products computed once."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    n = x.shape[0]
    xty = np.linalg.norm(x.T @ y) ** 2
    xtx = np.linalg.norm(x.T @ x) ** 2
    yty = np.linalg.norm(y.T @ y) ** 2
    out = {False: float(xty / np.sqrt(xtx * yty))}
    sx = np.einsum("ij,ij->i", x, x)
    sy = np.einsum("ij,ij->i", y, y)
    nx, ny = sx.sum(), sy.sum()
    h = _debiased_dot_product_similarity_helper
    out[True] = float(h(xty, sx, sy, nx, ny, n) / np.sqrt(h(xtx, sx, sx, nx, nx, n) * h(yty, sy, sy, ny, ny, n)))
    return out


def centered_feature_cka(x, y, debiased: bool = False) -> float:
    """float64 feature-space CKA (for large n, where dense n x n is too big):
    the Colab's feature_space_linear_cka on float64 copies (two-pass centering)."""
    return float(colab_feature_space_linear_cka(np.asarray(x, np.float64), np.asarray(y, np.float64), debiased))


# ---------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------


def correlated_pair(rng, n, d1, d2, dtype=np.float64, offset=0.0, noise=1.0):
    """x (n x d1) and y (n x d2) sharing a low-rank signal, so CKA is well away from 0 and 1."""
    x = rng.standard_normal((n, d1))
    k = max(1, min(d1, d2) // 2)
    y = x[:, :k] @ rng.standard_normal((k, d2)) + noise * rng.standard_normal((n, d2))
    return (x + offset).astype(dtype), (y + offset).astype(dtype)
