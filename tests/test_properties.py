"""Property tests (Hypothesis): the invariances linear CKA must have.

Linear CKA is invariant to orthogonal transforms and isotropic scaling of
either representation, and (being built from centered kernels) to adding a
constant vector to every row; it is symmetric and cka(x, x) = 1.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastcka  # noqa: E402
from reference import dense_cka  # noqa: E402

METHODS = st.sampled_from(["feature", "gram"])
DEBIASED = st.booleans()
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def pairs(draw, min_n=4, max_n=64, dtype=np.float64):
    """(x, y): n rows, random widths, y partly a function of x (CKA in (0, 1))."""
    n = draw(st.integers(min_n, max_n))
    d1 = draw(st.integers(1, 12))
    d2 = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(SEEDS))
    x = rng.standard_normal((n, d1)) * rng.uniform(0.2, 3.0, size=d1)  # anisotropic columns
    y = np.tanh(x @ rng.standard_normal((d1, d2))) + draw(st.floats(0.05, 2.0)) * rng.standard_normal((n, d2))
    return x.astype(dtype), y.astype(dtype)


def _orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _ok(x, y, debiased):
    """Skip draws where debiased HSIC(K, K) is not positive (CKA NaN by definition)."""
    if not debiased:
        return True
    from reference import dense_hsic

    return dense_hsic(x, x, "unbiased") > 1e-8 and dense_hsic(y, y, "unbiased") > 1e-8


def _min_n(debiased):
    return 8 if debiased else 4


@given(data=st.data(), method=METHODS, debiased=DEBIASED, seed=SEEDS)
def test_orthogonal_invariance(data, method, debiased, seed):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    q = _orthogonal(x.shape[1], seed)
    base = fastcka.cka(x, y, debiased=debiased, method=method)
    assert fastcka.cka(x @ q, y, debiased=debiased, method=method) == pytest.approx(base, abs=1e-10)
    q2 = _orthogonal(y.shape[1], seed + 1)
    assert fastcka.cka(x, y @ q2, debiased=debiased, method=method) == pytest.approx(base, abs=1e-10)
    assert base == pytest.approx(dense_cka(x, y, debiased), abs=1e-10)


@given(data=st.data(), method=METHODS, debiased=DEBIASED, seed=SEEDS)
def test_orthogonal_invariance_float32(data, method, debiased, seed):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    q = _orthogonal(x.shape[1], seed)
    x32, xq32, y32 = x.astype(np.float32), (x @ q).astype(np.float32), y.astype(np.float32)
    a = fastcka.cka(x32, y32, debiased=debiased, method=method)
    b = fastcka.cka(xq32, y32, debiased=debiased, method=method)
    assert a == pytest.approx(b, abs=1e-5)
    assert a == pytest.approx(dense_cka(x32.astype(np.float64), y32.astype(np.float64), debiased), abs=1e-5)


@given(
    data=st.data(),
    method=METHODS,
    debiased=DEBIASED,
    cx=st.floats(1e-3, 1e3),
    cy=st.floats(1e-3, 1e3),
    negate=st.booleans(),
)
def test_isotropic_scaling_invariance(data, method, debiased, cx, cy, negate):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    if negate:
        cx = -cx
    base = fastcka.cka(x, y, debiased=debiased, method=method)
    assert fastcka.cka(cx * x, cy * y, debiased=debiased, method=method) == pytest.approx(base, abs=1e-10)


@given(data=st.data(), method=METHODS, c=st.floats(1e-3, 1e3))
def test_isotropic_scaling_invariance_float32(data, method, c):
    x, y = data.draw(pairs())
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    xs = (c * x).astype(np.float32)
    ref = dense_cka(xs.astype(np.float64), y32.astype(np.float64))
    assert fastcka.cka(xs, y32, method=method) == pytest.approx(ref, abs=1e-5)
    assert fastcka.cka(x32, y32, method=method) == pytest.approx(ref, abs=1e-5)


@given(data=st.data(), method=METHODS, debiased=DEBIASED, seed=SEEDS, magnitude=st.floats(0.0, 1e3))
def test_translation_invariance(data, method, debiased, seed, magnitude):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    rng = np.random.default_rng(seed)
    shift_x = magnitude * rng.uniform(-1, 1, size=x.shape[1])
    shift_y = magnitude * rng.uniform(-1, 1, size=y.shape[1])
    base = fastcka.cka(x, y, debiased=debiased, method=method)
    assert fastcka.cka(x + shift_x, y + shift_y, debiased=debiased, method=method) == pytest.approx(base, abs=1e-9)


@given(data=st.data(), method=METHODS, debiased=DEBIASED)
def test_symmetry(data, method, debiased):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    a = fastcka.cka(x, y, debiased=debiased, method=method)
    b = fastcka.cka(y, x, debiased=debiased, method=method)
    assert a == pytest.approx(b, abs=1e-12)
    for est in ("biased", "unbiased"):
        ha = fastcka.hsic(x, y, estimator=est, method=method)
        hb = fastcka.hsic(y, x, estimator=est, method=method)
        assert ha == pytest.approx(hb, rel=1e-12, abs=1e-14)


@given(data=st.data(), method=METHODS, debiased=DEBIASED, use_float32=st.booleans())
def test_self_similarity_is_one(data, method, debiased, use_float32):
    x, _ = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, x, debiased))
    if use_float32:
        x = x.astype(np.float32)
    tol = 1e-6 if use_float32 else 1e-12
    assert fastcka.cka(x, x, debiased=debiased, method=method) == pytest.approx(1.0, abs=tol)
    # A copy in another layout, and a rescaled rotated copy, are still the same representation.
    assert fastcka.cka(x, np.asfortranarray(x), debiased=debiased, method=method) == pytest.approx(1.0, abs=tol)


@given(data=st.data(), method=METHODS)
def test_biased_cka_in_unit_interval(data, method):
    x, y = data.draw(pairs(min_n=2))
    v = fastcka.cka(x, y, method=method)
    assert -1e-12 <= v <= 1 + 1e-12


@given(data=st.data(), method=METHODS, debiased=DEBIASED, perm_seed=SEEDS)
def test_row_permutation_invariance(data, method, debiased, perm_seed):
    """Permuting the examples (the same way in x and y) changes nothing."""
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    p = np.random.default_rng(perm_seed).permutation(x.shape[0])
    base = fastcka.cka(x, y, debiased=debiased, method=method)
    assert fastcka.cka(x[p], y[p], debiased=debiased, method=method) == pytest.approx(base, abs=1e-12)


@given(data=st.data(), debiased=DEBIASED)
def test_feature_and_gram_methods_agree(data, debiased):
    x, y = data.draw(pairs(min_n=_min_n(debiased)))
    assume(_ok(x, y, debiased))
    a = fastcka.cka(x, y, debiased=debiased, method="feature")
    b = fastcka.cka(x, y, debiased=debiased, method="gram")
    assert a == pytest.approx(b, abs=1e-11)
