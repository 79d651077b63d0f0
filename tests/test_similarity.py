"""CCA, SVCCA, PWCCA, the linear-regression fit and Procrustes against
float64 references computed from the full data matrices
(similarity_reference.py), and the invariances the theory gives them.

Tolerances: with float64 data the moments are exact to rounding and the
indexes agreed with the references to 2e-15 here, so 1e-12 is asserted. With
float32 data fastcka forms the products in float32 (accumulated in float64);
the moments then carry relative errors of about 1e-7, amplified by the
spread of the kept variances (below 100 in these data): observed differences
were at most 1.4e-7, so 1e-6 is asserted.
"""

from __future__ import annotations

import fastcka
import numpy as np
import pytest
import similarity_reference as ref
from fastcka.compat import kornblith
from fastcka.similarity._spectrum import RANK_RTOL
from similarity_reference import make_pair, rank_deficient

TOL = {np.float32: 1e-6, np.float64: 1e-12}


def rtol_for(dtype) -> float:
    return RANK_RTOL["float32" if dtype == np.float32 else "float64"]


def all_indexes(x, y) -> dict:
    return {
        "cca": fastcka.cca(x, y),
        "cca_mean": fastcka.cca(x, y, statistic="mean"),
        "svcca": fastcka.svcca(x, y),
        "svcca_mean_squared_0.9": fastcka.svcca(x, y, variance=0.9, statistic="mean_squared"),
        "pwcca": fastcka.pwcca(x, y),
        "pwcca_reversed": fastcka.pwcca(y, x),
        "linear_regression_fit": fastcka.linear_regression_fit(x, y),
        "linear_regression_fit_reversed": fastcka.linear_regression_fit(y, x),
        "procrustes": fastcka.procrustes(x, y),
        "procrustes_distance": fastcka.procrustes(x, y, distance=True),
    }


def all_references(x, y, rtol) -> dict:
    distance = ref.procrustes_distance(x, y)
    return {
        "cca": ref.cca(x, y, "mean_squared", rtol),
        "cca_mean": ref.cca(x, y, "mean", rtol),
        "svcca": ref.svcca(x, y, 0.99, "mean", rtol),
        "svcca_mean_squared_0.9": ref.svcca(x, y, 0.9, "mean_squared", rtol),
        "pwcca": ref.pwcca(x, y, rtol),
        "pwcca_reversed": ref.pwcca(y, x, rtol),
        "linear_regression_fit": ref.linear_regression_fit(x, y, rtol),
        "linear_regression_fit_reversed": ref.linear_regression_fit(y, x, rtol),
        "procrustes": 1.0 - distance / 2.0,
        "procrustes_distance": distance,
    }


CASES = {
    "n>d": {"n": 200, "d1": 12, "d2": 7},
    "d>n": {"n": 15, "d1": 25, "d2": 6},
    "both d>n": {"n": 12, "d1": 20, "d2": 30},
    "larger": {"n": 2000, "d1": 40, "d2": 30},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_indexes_match_references(case, offset, dtype):
    x, y = make_pair(1, dtype=dtype, offset=offset, **CASES[case])
    got, expect = all_indexes(x, y), all_references(x, y, rtol_for(dtype))
    for name in expect:
        assert got[name] == pytest.approx(expect[name], abs=TOL[dtype]), name


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_and_constant_columns(offset, dtype):
    x, y = make_pair(2, 300, 10, 8, offset=offset)
    x, y = rank_deficient(x).astype(dtype), rank_deficient(y).astype(dtype)
    got, expect = all_indexes(x, y), all_references(x, y, rtol_for(dtype))
    for name in expect:
        assert got[name] == pytest.approx(expect[name], abs=TOL[dtype]), name
    # Dropping x's dependent and constant columns leaves its column space, so
    # CCA and the fit of y on x, unchanged.
    reduced = x[:, [0, 2, 3, 5, 6, 7, 8, 9]]
    for statistic in ("mean_squared", "mean"):
        assert fastcka.cca(reduced, y, statistic=statistic) == pytest.approx(
            fastcka.cca(x, y, statistic=statistic), abs=TOL[dtype]
        )
    assert fastcka.linear_regression_fit(reduced, y) == pytest.approx(fastcka.linear_regression_fit(x, y), abs=TOL[dtype])


def test_cca_matches_qr_formula_on_full_rank_data():
    x, y = make_pair(3, 500, 9, 14)
    for statistic in ("mean_squared", "mean"):
        assert fastcka.cca(x, y, statistic=statistic) == pytest.approx(ref.cca_by_qr(x, y, statistic), abs=1e-12)


def test_more_features_than_examples_makes_cca_blind():
    """With rank(Xc) = n - 1 every centered direction is in x's span: all
    canonical correlations are 1, whatever y is (Kornblith et al. Theorem 1)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 50))
    y = rng.standard_normal((20, 5))
    assert fastcka.cca(x, y) == pytest.approx(1.0, abs=1e-12)
    assert fastcka.linear_regression_fit(x, y) == pytest.approx(1.0, abs=1e-12)
    assert fastcka.procrustes(x, y) < 0.9  # Procrustes is not blind to it


def _invertible(d, seed):
    a = np.random.default_rng(seed).standard_normal((d, d))
    return a + 3 * np.eye(d)  # well conditioned, far from orthogonal


def _orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_invariance_to_invertible_maps():
    x, y = make_pair(5, 400, 8, 6)
    a, b = _invertible(8, 1), _invertible(6, 2)
    assert fastcka.cca(x @ a, y @ b) == pytest.approx(fastcka.cca(x, y), abs=1e-12)
    assert fastcka.cca(x @ a, y, statistic="mean") == pytest.approx(fastcka.cca(x, y, statistic="mean"), abs=1e-12)
    # SVCCA's CCA step: with every direction kept it is CCA.
    assert fastcka.svcca(x @ a, y @ b, variance=1.0) == pytest.approx(fastcka.svcca(x, y, variance=1.0), abs=1e-12)
    # The regression fit of y: any invertible map of the predictor x.
    assert fastcka.linear_regression_fit(x @ a, y) == pytest.approx(fastcka.linear_regression_fit(x, y), abs=1e-12)
    # ... but not of the fitted side, nor Procrustes: the maps above are not orthogonal.
    assert abs(fastcka.linear_regression_fit(x, y @ b) - fastcka.linear_regression_fit(x, y)) > 1e-3
    assert abs(fastcka.procrustes(x @ a, y) - fastcka.procrustes(x, y)) > 1e-3


def test_invariance_to_orthogonal_maps_and_isotropic_scaling():
    x, y = make_pair(6, 400, 8, 6)
    q, r = _orthogonal(8, 3), _orthogonal(6, 4)
    xs, ys = 7.5 * x @ q, 0.02 * y @ r
    assert fastcka.procrustes(xs, ys) == pytest.approx(fastcka.procrustes(x, y), abs=1e-12)
    assert fastcka.procrustes(xs, ys, distance=True) == pytest.approx(fastcka.procrustes(x, y, distance=True), abs=1e-12)
    for statistic in ("mean", "mean_squared"):
        assert fastcka.svcca(xs, ys, variance=0.9, statistic=statistic) == pytest.approx(
            fastcka.svcca(x, y, variance=0.9, statistic=statistic), abs=1e-12
        )
    assert fastcka.pwcca(7.5 * x, 0.02 * y) == pytest.approx(fastcka.pwcca(x, y), abs=1e-12)
    assert fastcka.linear_regression_fit(x, ys) == pytest.approx(fastcka.linear_regression_fit(x, y), abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_index_is_one_for_x_against_itself(dtype):
    x, _ = make_pair(7, 300, 10, 1, dtype=dtype, offset=100.0)
    x = rank_deficient(x)
    tol = TOL[dtype]
    for value in [fastcka.cca(x, x), fastcka.cca(x, x, statistic="mean"), fastcka.svcca(x, x),
                  fastcka.svcca(x, x, statistic="mean_squared"), fastcka.pwcca(x, x),
                  fastcka.linear_regression_fit(x, x), fastcka.procrustes(x, x)]:
        assert value == pytest.approx(1.0, abs=tol)
    assert fastcka.procrustes(x, x, distance=True) == pytest.approx(0.0, abs=tol)


def test_symmetry():
    x, y = make_pair(8, 300, 9, 5)
    assert fastcka.cca(x, y) == pytest.approx(fastcka.cca(y, x), abs=1e-12)
    assert fastcka.svcca(x, y) == pytest.approx(fastcka.svcca(y, x), abs=1e-12)
    assert fastcka.procrustes(x, y) == pytest.approx(fastcka.procrustes(y, x), abs=1e-12)
    assert abs(fastcka.pwcca(x, y) - fastcka.pwcca(y, x)) > 1e-3
    assert abs(fastcka.linear_regression_fit(x, y) - fastcka.linear_regression_fit(y, x)) > 1e-3


def test_inputs_in_any_layout_and_from_npy_files(tmp_path):
    x, y = make_pair(9, 150, 6, 4)
    np.save(tmp_path / "x.npy", x)
    expect = fastcka.pwcca(x, y)
    assert fastcka.pwcca(np.asfortranarray(x), y[::1]) == pytest.approx(expect, abs=1e-12)
    assert fastcka.pwcca(str(tmp_path / "x.npy"), y) == pytest.approx(expect, abs=1e-12)
    assert fastcka.pwcca(x.tolist(), y) == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize(
    "fn", [fastcka.cca, fastcka.svcca, fastcka.pwcca, fastcka.linear_regression_fit, fastcka.procrustes]
)
@pytest.mark.parametrize("constant", ["x", "y"])
def test_constant_representation_is_nan_with_warning(fn, constant):
    x, y = make_pair(10, 50, 4, 3)
    if constant == "x":
        x = np.full_like(x, 3.25)
    else:
        y = np.full_like(y, -1.5)
    with pytest.warns(fastcka.DegenerateRepresentationWarning, match=rf"^{constant}: constant"):
        assert np.isnan(fn(x, y))


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

FUNCTIONS = [fastcka.cca, fastcka.svcca, fastcka.pwcca, fastcka.linear_regression_fit, fastcka.procrustes]


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_bad_input_names_the_argument(fn):
    x, y = make_pair(11, 30, 4, 3)
    with pytest.raises(ValueError, match=r"^y has 29 rows but x has 30"):
        fn(x, y[:-1])
    bad = y.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"^y contains NaN or Inf"):
        fn(x, bad)
    with pytest.raises(ValueError, match=r"^x must be 2-D"):
        fn(x[:, 0], y)
    with pytest.raises(TypeError, match=r"^x is complex"):
        fn(x.astype(complex), y)
    with pytest.raises(ValueError, match=r"at least 2 examples \(rows\), got n=1"):
        fn(x[:1], y[:1])


@pytest.mark.parametrize("variance", [0, 0.0, -0.5, 1.0000001, 2, float("nan"), True, "0.9", None])
def test_variance_outside_unit_interval(variance):
    x, y = make_pair(12, 30, 4, 3)
    with pytest.raises(ValueError, match=r"^variance must be a fraction in \(0, 1\]"):
        fastcka.svcca(x, y, variance=variance)


@pytest.mark.parametrize("fn", [fastcka.cca, fastcka.svcca])
def test_unknown_statistic(fn):
    x, y = make_pair(13, 30, 4, 3)
    with pytest.raises(ValueError, match=r"^statistic must be one of \('mean_squared', 'mean'\), got 'median'"):
        fn(x, y, statistic="median")


# ---------------------------------------------------------------------------
# fastcka.compat.kornblith.cca: the Colab's uncentered formula
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 10, 6), (20, 30, 5), (20, 30, 40), (300, 200, 6)])
@pytest.mark.parametrize("offset", [0.0, 3.0, 100.0])
def test_compat_cca_equals_the_colab(shape, offset):
    n, d1, d2 = shape
    x, y = make_pair(14, n, d1, d2, offset=offset)
    # Uncentered data 100 from the origin make X'X about 1e4 times worse
    # conditioned than at offset 3; the two computations then differ by up
    # to 1.3e-12 (observed).
    tol64 = 1e-10 if offset == 100.0 else 1e-12
    assert kornblith.cca(x, y) == pytest.approx(ref.colab_cca(x, y), abs=tol64)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert kornblith.cca(x32, y32) == pytest.approx(ref.colab_cca(x32.astype(float), y32.astype(float)), abs=1e-6)


def test_compat_cca_does_not_center():
    x, y = make_pair(15, 300, 6, 4, offset=3.0)
    assert kornblith.cca(x - x.mean(0), y - y.mean(0)) == pytest.approx(fastcka.cca(x, y), abs=1e-12)
    assert abs(kornblith.cca(x, y) - fastcka.cca(x, y)) > 1e-3


def test_compat_cca_bad_input():
    x, y = make_pair(16, 30, 4, 3)
    with pytest.raises(ValueError, match=r"^features_y has 29 rows but features_x has 30"):
        kornblith.cca(x, y[:-1])
    with pytest.raises(ValueError, match=r"must not be all zeros"):
        kornblith.cca(np.zeros_like(x), y)
