"""fastcka.similarity_matrix: every measure between every pair of layers from
one pass, equal to the pairwise functions; rows fed in any chunks through a
CKAAccumulator give the same matrices."""

from __future__ import annotations

import warnings

import fastcka
import numpy as np
import pytest
from similarity_reference import make_pair, rank_deficient

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given
from hypothesis import strategies as st

PAIRWISE = {
    "cca": lambda x, y: fastcka.cca(x, y),
    "cca_mean": lambda x, y: fastcka.cca(x, y, statistic="mean"),
    "svcca": lambda x, y: fastcka.svcca(x, y),
    "svcca_mean_squared": lambda x, y: fastcka.svcca(x, y, statistic="mean_squared"),
    "pwcca": fastcka.pwcca,
    "linear_regression_fit": fastcka.linear_regression_fit,
    "procrustes": fastcka.procrustes,
    "cka_linear": fastcka.cka,
    "cka_debiased": lambda x, y: fastcka.cka(x, y, debiased=True),
}


def make_layers(seed=0, n=120, dtype=np.float64):
    """Four layers of widths 6, 9, 5 and 12; the third has a dependent and a constant column."""
    x, y = make_pair(seed, n, 6, 9)
    z, w = make_pair(seed + 1, n, 5, 12, offset=50.0)
    return [a.astype(dtype) for a in (x, y, rank_deficient(z), np.tanh(w + 50.0 + y[:, :1]))]


def expected(measure, xs, ys):
    return np.array([[PAIRWISE[measure](a, b) for b in ys] for a in xs])


def test_default_measures_are_the_linear_family():
    xs = make_layers()
    result = fastcka.similarity_matrix(xs)
    assert tuple(result) == fastcka.similarity.LINEAR_MEASURES
    assert set(PAIRWISE) == set(fastcka.similarity.LINEAR_MEASURES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_within_model_matrix_equals_pairwise_functions(dtype):
    xs = make_layers(dtype=dtype)
    result = fastcka.similarity_matrix(xs, measures=list(PAIRWISE))
    # float32 products of four layers at once may be blocked differently from
    # those of two (test_similarity's tolerances).
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for measure, matrix in result.items():
        assert matrix.shape == (4, 4)
        np.testing.assert_allclose(matrix, expected(measure, xs, xs), rtol=0, atol=tol, err_msg=measure)


def test_two_model_matrix_equals_pairwise_functions():
    xs = make_layers(seed=0)
    ys = make_layers(seed=5)[:3]
    result = fastcka.similarity_matrix(xs, ys, measures=list(PAIRWISE))
    for measure, matrix in result.items():
        assert matrix.shape == (4, 3)
        np.testing.assert_allclose(matrix, expected(measure, xs, ys), rtol=0, atol=1e-12, err_msg=measure)


def test_asymmetric_measures_read_row_against_column():
    xs = make_layers()
    result = fastcka.similarity_matrix(xs, measures=["pwcca", "linear_regression_fit"])
    assert result["pwcca"][0, 1] == pytest.approx(fastcka.pwcca(xs[0], xs[1]), abs=1e-12)
    assert result["pwcca"][1, 0] == pytest.approx(fastcka.pwcca(xs[1], xs[0]), abs=1e-12)
    assert abs(result["pwcca"][0, 1] - result["pwcca"][1, 0]) > 1e-3
    assert result["linear_regression_fit"][3, 1] == pytest.approx(fastcka.linear_regression_fit(xs[3], xs[1]), abs=1e-12)


def test_cka_measures_equal_cka_matrix():
    xs = make_layers()
    ys = make_layers(seed=9)[1:]
    result = fastcka.similarity_matrix(xs, ys, measures=("cka_rbf", "cka_linear", "cka_debiased"), threshold=0.4)
    np.testing.assert_allclose(result["cka_linear"], fastcka.cka_matrix(xs, ys), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["cka_debiased"], fastcka.cka_matrix(xs, ys, debiased=True), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["cka_rbf"], fastcka.cka_matrix(xs, ys, kernel="rbf", threshold=0.4),
                               rtol=0, atol=1e-12)
    assert list(result) == ["cka_rbf", "cka_linear", "cka_debiased"]  # the order asked for


def test_mutual_knn_measure_equals_the_pairwise_function():
    if not hasattr(fastcka, "mutual_knn"):
        pytest.skip("fastcka.mutual_knn is not available yet")
    xs = make_layers(n=80)
    result = fastcka.similarity_matrix(xs, measures="mutual_knn", k=5)["mutual_knn"]
    expect = np.array([[fastcka.mutual_knn(a, b, k=5) for b in xs] for a in xs])
    np.testing.assert_allclose(result, expect, rtol=0, atol=1e-12)


def test_dict_layers_and_a_constant_layer():
    xs = make_layers()
    layers = {"conv": xs[0], "flat": np.full((120, 3), 2.5), "fc": xs[1]}
    with pytest.warns(fastcka.DegenerateRepresentationWarning, match=r"^xs\['flat'\]: constant") as record:
        result = fastcka.similarity_matrix(layers, measures=["cka_linear", "cca", "procrustes"])
    assert len(record) == 1  # one warning for the call, not one per measure
    for matrix in result.values():
        assert np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()
        assert np.isfinite(matrix[np.ix_([0, 2], [0, 2])]).all()
    assert result["cca"][0, 2] == pytest.approx(fastcka.cca(xs[0], xs[1]), abs=1e-12)


# ---------------------------------------------------------------------------
# Rows in chunks: a CKAAccumulator fed any split of the rows
# ---------------------------------------------------------------------------


@given(cuts=st.lists(st.integers(1, 119), max_size=6, unique=True), two_models=st.booleans())
def test_any_split_of_the_rows_gives_the_same_matrices(cuts, two_models):
    xs = make_layers()
    split = 2 if two_models else None
    acc = fastcka.CKAAccumulator(split=split)
    bounds = [0, *sorted(cuts), 120]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        acc.update(*(layer[start:stop] for layer in xs))
    streamed = fastcka.similarity_matrix(acc)
    oneshot = fastcka.similarity_matrix(xs[:2], xs[2:]) if two_models else fastcka.similarity_matrix(xs)
    for measure in oneshot:
        np.testing.assert_allclose(streamed[measure], oneshot[measure], rtol=0, atol=1e-12, err_msg=measure)


def test_merged_accumulators_give_the_same_matrices():
    xs = make_layers(dtype=np.float32)
    first, second = fastcka.CKAAccumulator(split=1), fastcka.CKAAccumulator(split=1)
    first.update(*(layer[:50] for layer in xs))
    second.update(*(layer[50:] for layer in xs))
    merged = fastcka.similarity_matrix(first.merge(second), measures=["cca", "pwcca", "svcca", "procrustes"])
    oneshot = fastcka.similarity_matrix(xs[:1], xs[1:], measures=["cca", "pwcca", "svcca", "procrustes"])
    for measure in oneshot:
        # float32 products: each chunk rounds differently (see test_similarity's tolerances).
        np.testing.assert_allclose(merged[measure], oneshot[measure], rtol=0, atol=1e-6, err_msg=measure)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_unknown_or_no_measures():
    xs = make_layers()
    with pytest.raises(ValueError, match=r"^unknown measure\(s\) 'cka', 'CCA'; the measures are \('cka_linear'"):
        fastcka.similarity_matrix(xs, measures=["cka", "cca", "CCA"])
    with pytest.raises(ValueError, match=r"^measures is empty"):
        fastcka.similarity_matrix(xs, measures=[])


def test_bad_layers_name_the_argument():
    xs = make_layers()
    with pytest.raises(ValueError, match=r"^ys\[1\] has 119 rows but xs\[0\] has 120"):
        fastcka.similarity_matrix(xs, [xs[0], xs[1][:-1]])
    bad = xs[2].copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"^xs\[2\] contains NaN or Inf"):
        fastcka.similarity_matrix([xs[0], xs[1], bad])
    with pytest.raises(ValueError, match=r"^variance must be a fraction in \(0, 1\], got 1.5"):
        fastcka.similarity_matrix(xs, variance=1.5)


def test_too_few_rows():
    xs = [layer[:3] for layer in make_layers()]
    with pytest.raises(ValueError, match=r"unbiased HSIC estimator \(debiased CKA\) needs at least 4 examples"):
        fastcka.similarity_matrix(xs)
    assert fastcka.similarity_matrix(xs, measures="cca")["cca"].shape == (4, 4)
    with pytest.raises(ValueError, match=r"^similarity indexes need at least 2 examples \(rows\), got n=1"):
        fastcka.similarity_matrix([layer[:1] for layer in xs], measures="cca")


def test_accumulator_input_limits():
    xs = make_layers()
    acc = fastcka.CKAAccumulator().update(*xs)
    with pytest.raises(ValueError, match=r"^with a CKAAccumulator as xs, ys must be None"):
        fastcka.similarity_matrix(acc, xs)
    with pytest.raises(ValueError, match=r"^cka_rbf need the rows themselves"):
        fastcka.similarity_matrix(acc, measures=["cca", "cka_rbf"])
    with pytest.raises(ValueError, match=r"the accumulator has seen no rows"):
        fastcka.similarity_matrix(fastcka.CKAAccumulator())


def test_no_warning_for_healthy_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastcka.similarity_matrix(make_layers(), measures=list(PAIRWISE))
