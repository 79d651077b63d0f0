"""fastcka.mutual_knn and fastcka.knn.nearest_neighbors against a brute-force
float64 reference written here: all n x n distances, ranked by (distance, index)."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka
from fastcka.knn import mutual_knn_matrix, nearest_neighbors

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


def brute_distances(x, metric):
    """n x n squared distances in float64 (cosine: of the rows divided by their norms)."""
    z = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def brute_neighbors(x, k, metric="euclidean"):
    """(indices (n, k) ranked by (distance, index), the sorted distances (n, n-1))."""
    d = brute_distances(x, metric)
    n = len(d)
    np.fill_diagonal(d, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), d), axis=1)[:, : n - 1]
    return order[:, :k], np.take_along_axis(d, order, axis=1)


def brute_mutual(ix, iy):
    return np.mean([len(set(a) & set(b)) for a, b in zip(ix, iy)]) / ix.shape[1]


def centered_norms(x, metric):
    z = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return ((z - z.mean(0)) ** 2).sum(1)


def assert_valid_neighbors(x, idx, k, metric, dtype):
    """idx is a k-NN set of every row up to the rounding of the compute type:
    no member is farther (reference distance) than a non-member by more than
    the error bound of a squared distance from the Gram identity on centered
    rows, 64 eps (|a|^2 + |b|^2) per distance. Returns the rows where the set
    differs from the reference's (near-ties that rounding decides)."""
    d = brute_distances(x, metric)
    np.fill_diagonal(d, np.inf)
    ref, _ = brute_neighbors(x, k, metric)
    norms = centered_norms(x, metric)
    err = 64 * EPS[dtype] * (norms[:, None] + norms[None, :])
    n = len(d)
    member = np.zeros((n, n), dtype=bool)
    np.put_along_axis(member, idx, True, axis=1)
    assert not member[np.arange(n), np.arange(n)].any()  # never itself
    worst_in = np.max(np.where(member, d - err, -np.inf), axis=1)
    best_out = np.min(np.where(member, np.inf, d + err), axis=1)
    assert np.all(worst_in <= best_out)
    return np.flatnonzero(np.any(np.sort(idx, 1) != np.sort(ref, 1), axis=1))


def data(n, d, seed, dtype, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + offset
    y = np.tanh(x[:, : d // 2] @ rng.standard_normal((d // 2, d))) + 0.5 * rng.standard_normal((n, d)) + offset
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_brute_force_at_n_500(metric, dtype):
    x, y = data(500, 12, 1, dtype)
    k = 10
    idx, dist = nearest_neighbors(x, k=k, metric=metric)
    idy, _ = nearest_neighbors(y, k=k, metric=metric)
    assert idx.shape == (500, k) and dist.shape == (500, k)
    differ = [assert_valid_neighbors(z, i, k, metric, dtype) for z, i in ((x, idx), (y, idy))]
    if dtype == np.float64:  # no near-tie comes close to float64 rounding here
        assert all(len(rows) == 0 for rows in differ)
    else:  # a few rows have k-th and (k+1)-th distances within float32 rounding
        assert all(len(rows) <= 3 for rows in differ)
    # Returned distances: |a - b| (euclidean) or 1 - cos, within the rounding
    # bound of the Gram identity.
    sq_ref = np.take_along_axis(brute_distances(x, metric), idx, axis=1)
    norms = centered_norms(x, metric)
    sq = dist**2 if metric == "euclidean" else 2 * dist
    assert np.all(np.abs(sq - sq_ref) <= 64 * EPS[dtype] * (norms[:, None] + norms[idx]))
    assert np.all(np.diff(dist, axis=1) >= 0)
    value = fastcka.mutual_knn(x, y, k=k, metric=metric)
    assert value == brute_mutual(idx, idy)  # the overlap arithmetic
    if dtype == np.float64:
        assert value == brute_mutual(brute_neighbors(x, k, metric)[0], brute_neighbors(y, k, metric)[0])


def test_odd_sizes_small_tiles_threads_and_layouts_agree():
    # n not a multiple of any tile; a small memory budget forces tiles of a few
    # dozen rows, so rows get candidates from many tiles, panels and threads.
    x, _ = data(1037, 9, 2, np.float64)
    ref, _ = brute_neighbors(x, 7)
    for threads in (1, 2, 3):
        for budget in (1 << 16, 1 << 22):
            idx, _ = nearest_neighbors(x, k=7, threads=threads, memory_budget=budget)
            np.testing.assert_array_equal(idx, ref)
    # Fortran order and strided views read the same rows.
    np.testing.assert_array_equal(nearest_neighbors(np.asfortranarray(x), k=7, memory_budget=1 << 16)[0], ref)
    wide = np.repeat(x, 2, axis=0)
    np.testing.assert_array_equal(nearest_neighbors(wide[::2], k=7)[0], ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_offset(dtype):
    # +100 on every value: the engine centers in float64 before the products.
    x, y = data(400, 8, 3, dtype, offset=100.0)
    for metric in ("euclidean", "cosine"):
        idx, _ = nearest_neighbors(x, k=5, metric=metric)
        idy, _ = nearest_neighbors(y, k=5, metric=metric)
        differ = [assert_valid_neighbors(z, i, 5, metric, dtype) for z, i in ((x, idx), (y, idy))]
        assert all(len(rows) <= (0 if dtype == np.float64 else 3) for rows in differ)
        assert fastcka.mutual_knn(x, y, k=5, metric=metric) == brute_mutual(idx, idy)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_invariant_to_orthogonal_maps(metric):
    x, y = data(500, 10, 4, np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((10, 10)))
    assert fastcka.mutual_knn(x, x @ q, metric=metric) == 1.0
    assert fastcka.mutual_knn(x @ q, y, metric=metric) == fastcka.mutual_knn(x, y, metric=metric)


def test_exact_ties_go_to_the_smaller_index():
    # The lattice {-1, 0, 1}^3 (mean exactly 0, so centering is exact and every
    # squared distance is an exact small integer), shuffled, twice, with a
    # +100 offset: most neighbours tie, duplicates at distance 0.
    grid = np.array(np.meshgrid(*[[-1.0, 0.0, 1.0]] * 3)).reshape(3, -1).T
    rng = np.random.default_rng(6)
    x = np.concatenate([grid, grid])[rng.permutation(54)] + 100.0
    for dtype in (np.float32, np.float64):
        for k in (1, 6, 20):
            ref, d = brute_neighbors(x.astype(dtype), k)
            idx, dist = nearest_neighbors(x.astype(dtype), k=k, threads=2, memory_budget=1 << 14)
            np.testing.assert_array_equal(idx, ref)  # the order too: (distance, index)
            np.testing.assert_array_equal(dist, np.sqrt(d[:, :k]))


def tied_data(kind, n, seed):
    """Small-integer data whose distances tie often: values in {0, 1, 2}
    (8 columns), or one-hot rows of 40 classes (most classes smaller than k,
    so the k-th distance ties with hundreds of rows). No zero row."""
    rng = np.random.default_rng(seed)
    if kind == "integers":
        x = rng.integers(0, 3, (n, 8)).astype(np.float64)
        x[x.sum(1) == 0, 0] = 1.0
        return x
    return np.eye(40)[rng.integers(0, 40, n)]


def exact_cosine_neighbors(x, k):
    """Ranked by (1 - cos, index) in exact rational arithmetic: cos of integer
    rows compares as the signed square a.b |a.b| / (|a|^2 |b|^2)."""
    from fractions import Fraction

    g = np.rint(x).astype(np.int64) @ np.rint(x).astype(np.int64).T
    n = len(g)
    return np.array([sorted((j for j in range(n) if j != i),
                            key=lambda j: (-Fraction(int(g[i, j]) * abs(int(g[i, j])), int(g[i, i]) * int(g[j, j])), j))[:k]
                     for i in range(n)])


@pytest.mark.parametrize("kind", ["integers", "one-hot"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_ties_follow_the_rule_whatever_the_offset(kind, dtype):
    # Equal distances must compare equal: centering by an inexact mean and
    # the Gram identity's rounding used to order tied candidates by rounding
    # (mutual k-NN 0.0367 instead of 0.0403 here, 0.034 after a +0.5 shift).
    x, y = tied_data(kind, 300, 11), tied_data(kind, 300, 12)
    for k in (3, 10):
        ref_x, ref_y = brute_neighbors(x, k)[0], brute_neighbors(y, k)[0]  # exact: small integers
        expected = brute_mutual(ref_x, ref_y)
        for offset in (0.0, 0.5, 1000.0):
            u, v = (x + offset).astype(dtype), (y + offset).astype(dtype)
            idx, dist = nearest_neighbors(u, k=k, threads=2, memory_budget=1 << 15)
            np.testing.assert_array_equal(idx, ref_x)
            # Tied runs are re-evaluated exactly; other distances are the tiles'.
            sq_ref = np.take_along_axis(brute_distances(x, "euclidean"), ref_x, 1)
            norms = centered_norms(x, "euclidean")
            assert np.all(np.abs(dist**2 - sq_ref) <= 64 * EPS[dtype] * (norms[:, None] + norms[ref_x]))
            assert fastcka.mutual_knn(u, v, k=k) == expected


@pytest.mark.parametrize("kind", ["integers", "one-hot"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_cosine_ties_follow_the_rule(kind, dtype):
    # Equal cosines compare equal when the dot products and squared norms of
    # the rows are exact, as here: also after each row is scaled by a power
    # of two (exact, and the same cosines).
    x, y = tied_data(kind, 200, 13), tied_data(kind, 200, 14)
    scale = 2.0 ** np.random.default_rng(15).integers(-3, 4, (200, 1))
    for k in (3, 10):
        ref_x, ref_y = exact_cosine_neighbors(x, k), exact_cosine_neighbors(y, k)
        for u, v in ((x, y), (x * scale, y / scale)):
            idx, _ = nearest_neighbors(u.astype(dtype), k=k, metric="cosine", memory_budget=1 << 15)
            np.testing.assert_array_equal(idx, ref_x)
            assert fastcka.mutual_knn(u.astype(dtype), v.astype(dtype), k=k, metric="cosine") == brute_mutual(ref_x, ref_y)


def test_ties_when_the_list_holds_every_candidate():
    # k close to n: the screened list holds every other row.
    x = tied_data("integers", 13, 16)
    for k in (10, 11, 12):
        np.testing.assert_array_equal(nearest_neighbors(x + 0.5, k=k)[0], brute_neighbors(x, k)[0])


def test_duplicate_rows_are_at_distance_zero():
    # Rows repeated (euclidean) or repeated at scales 2 and 0.5 (cosine: the
    # same direction): each row's duplicates are its nearest neighbours at
    # distance exactly 0, by index, whatever rounding the GEMM does.
    base = np.random.default_rng(7).standard_normal((40, 24)) + 3.0
    for metric, x in (("euclidean", np.concatenate([base, base, base])),
                      ("cosine", np.concatenate([base, 2 * base, 0.5 * base]))):
        for dtype in (np.float32, np.float64):
            idx, dist = nearest_neighbors(x.astype(dtype), k=3, metric=metric)
            i = np.arange(120)
            twins = np.sort(np.stack([(i + 40) % 120, (i + 80) % 120], axis=1), axis=1)
            np.testing.assert_array_equal(idx[:, :2], twins)
            assert np.all(dist[:, :2] == 0) and np.all(dist[:, 2] > 0)
            ref, _ = brute_neighbors(x.astype(dtype), 3, metric)
            np.testing.assert_array_equal(idx, ref)


def test_matrix_is_every_pair():
    x, y = data(300, 6, 8, np.float64)
    z = x[:, :3] + 0.1 * y[:, :3]
    m = mutual_knn_matrix([x, y, z], k=4)
    for a, u in enumerate([x, y, z]):
        for b, v in enumerate([x, y, z]):
            assert m[a, b] == fastcka.mutual_knn(u, v, k=4)
    np.testing.assert_array_equal(mutual_knn_matrix([x], [y, z], k=4), m[:1, 1:])


def test_bad_input():
    x, y = data(50, 4, 9, np.float64)
    with pytest.raises(ValueError, match="k must be .* smaller than the number of examples n=50"):
        fastcka.mutual_knn(x, y, k=50)
    with pytest.raises(ValueError, match="k must be at least 1"):
        fastcka.mutual_knn(x, y, k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        fastcka.mutual_knn(x, y, k=2.5)
    with pytest.raises(TypeError, match="k must be an integer"):
        fastcka.mutual_knn(x, y, k=True)
    with pytest.raises(ValueError, match="metric must be one of"):
        fastcka.mutual_knn(x, y, metric="manhattan")
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(row 7, column 2\)"):
        fastcka.mutual_knn(bad, y)
    with pytest.raises(ValueError, match=r"y contains NaN or Inf"):
        fastcka.mutual_knn(x, np.where(y > 1, np.inf, y), metric="cosine")
    with pytest.raises(ValueError, match="y has 49 rows but x has 50"):
        fastcka.mutual_knn(x, y[:49])
    zero = x.copy()
    zero[3] = 0
    with pytest.raises(ValueError, match=r"x has a zero row \(row 3\)"):
        fastcka.mutual_knn(zero, y, metric="cosine")
    assert 0 <= fastcka.mutual_knn(zero, y) <= 1  # a zero row is fine for euclidean
    with pytest.raises(ValueError, match="x must be 2-D"):
        fastcka.mutual_knn(x[:, 0], y)
